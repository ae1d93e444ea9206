#!/usr/bin/env bash
# The kind path: the chart, the image and the e2e tests on a real (kind) cluster.
#
#   hack/kind-e2e.sh            # make kind-e2e
#
# NOT exercised by this project's CI: the machines it runs on have no container
# engine. Needs docker (or podman as docker), kind, kubectl, helm and the project's
# venv (.venv, make venv). Steps:
#   1. create a kind cluster (reused when it exists; KEEP_CLUSTER=1 keeps it after);
#   2. build the image (Dockerfile) as mwa-staging:kind and load it into the nodes;
#   3. apply Kafka and the simulators (hack/kind/simulators.yaml, same image);
#   4. helm install the chart with charts/mwa-staging/ci/kind-values.yaml;
#   5. apply examples/observation-job.yaml and wait for its callback;
#   6. run the e2e tests (tests/e2e) against the cluster: they read the kubeconfig
#      and the endpoints from the environment (KUBECONFIG, CALLBACK_URL, ...), the
#      same variables the local stack writes to .stack/env; the endpoints are
#      reached through `kubectl port-forward`.
set -euo pipefail

CLUSTER=${CLUSTER:-mwa-staging}
NAMESPACE=${NAMESPACE:-mwa-staging}
RELEASE=${RELEASE:-mwa}
IMAGE=mwa-staging:kind
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d)
PIDS=()

log() { printf '[kind-e2e] %s\n' "$*" >&2; }

cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
    if [[ "${KEEP_CLUSTER:-0}" != 1 ]]; then
        log "deleting the kind cluster $CLUSTER (KEEP_CLUSTER=1 keeps it)"
        kind delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true
    fi
}
trap cleanup EXIT

for tool in docker kind kubectl helm; do
    command -v "$tool" >/dev/null || { log "$tool is needed on PATH"; exit 1; }
done

export KUBECONFIG="$WORK/kubeconfig"
if kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
    kind export kubeconfig --name "$CLUSTER" --kubeconfig "$KUBECONFIG"
else
    log "creating the kind cluster $CLUSTER"
    kind create cluster --name "$CLUSTER" --kubeconfig "$KUBECONFIG" --wait 120s
fi

log "building $IMAGE"
docker build -t "$IMAGE" "$ROOT"
kind load docker-image "$IMAGE" --name "$CLUSTER"

kubectl create namespace "$NAMESPACE" --dry-run=client -o yaml | kubectl apply -f -
ns=(--namespace "$NAMESPACE")

# Throwaway credentials of the simulated Scout API and callback receiver.
SCOUT_PASSWORD=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')
RESULT_PASSWORD=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')
kubectl "${ns[@]}" create secret generic sim-scout --from-literal=username=scout \
    --from-literal=password="$SCOUT_PASSWORD" --dry-run=client -o yaml | kubectl apply -f -
kubectl "${ns[@]}" create secret generic sim-callback --from-literal=username=portal \
    --from-literal=password="$RESULT_PASSWORD" --dry-run=client -o yaml | kubectl apply -f -

log "starting Kafka and the simulators"
kubectl "${ns[@]}" apply -f "$ROOT/hack/kind/simulators.yaml"
kubectl "${ns[@]}" wait --for=condition=Available --timeout=300s deployment --all

log "installing the chart"
helm upgrade --install "$RELEASE" "$ROOT/charts/mwa-staging" "${ns[@]}" \
    --values "$ROOT/charts/mwa-staging/ci/kind-values.yaml" --wait --timeout 300s
kubectl wait --for=condition=Established --timeout=60s crd/stagingjobs.staging.mwatelescope.org

# Endpoints for the tests, through port-forwards to the in-cluster services.
forward() { # service local-port remote-port
    kubectl "${ns[@]}" port-forward "service/$1" "$2:$3" >"$WORK/pf-$1.log" 2>&1 &
    PIDS+=($!)
}
forward sim-callback 18099 8080
forward sim-banksia 18098 8080
forward "$RELEASE-mwa-staging-operator" 18080 8080
forward "$RELEASE-mwa-staging-bridge" 18081 8081
sleep 3

# The callback URL the operator uses is the in-cluster one; the tests read the
# receiver's log through its control endpoint.
export CALLBACK_URL="http://sim-callback:8080/callback"
export CALLBACK_CONTROL_URL="http://127.0.0.1:18099/_control"
export SIM_CONTROL_URL="http://127.0.0.1:18098"
export OPERATOR_URL="http://127.0.0.1:18080"
export BRIDGE_URL="http://127.0.0.1:18081"
export RESULT_USERNAME=portal RESULT_PASSWORD
export STAGING_NAMESPACE="$NAMESPACE"

log "applying examples/observation-job.yaml"
sed "s|\${CALLBACK_URL}|$CALLBACK_URL|" "$ROOT/examples/observation-job.yaml" \
    | kubectl "${ns[@]}" apply -f -
for _ in $(seq 120); do
    delivered=$(kubectl "${ns[@]}" get stagingjob obs-1234500012 \
        -o jsonpath='{.status.callback.deliveredTime}' 2>/dev/null || true)
    [[ -n "$delivered" ]] && break
    sleep 2
done
kubectl "${ns[@]}" get stagingjobs
[[ -n "${delivered:-}" ]] || { log "no callback delivered for obs-1234500012"; exit 1; }
log "callback delivered at $delivered"

log "running the e2e tests against the cluster"
"$ROOT/.venv/bin/python" -m pytest "$ROOT/tests/e2e" -m "not stack_only" -q
log "done"
