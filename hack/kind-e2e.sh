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
#   6. run the e2e tests (tests/e2e) against the cluster, the same test code as
#      `make test` on the local stack: MWA_E2E_EXTERNAL=1 and the MWA_E2E_*
#      variables (tests/e2e/target.py) give them the kubeconfig and the endpoints,
#      reached through `kubectl port-forward`; `-m "not local_only"` leaves out
#      the tests that need the local stack's processes (crash, faults, RBAC
#      tokens, the bridge's preloaded bursts), which pytest would skip anyway.
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
    for pid in ${PIDS[@]+"${PIDS[@]}"}; do kill "$pid" 2>/dev/null || true; done
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

# Throwaway credentials of the simulated Scout API and callback receiver. The
# callback user is the local stack's (asvo): the e2e tests add a user "portal"
# to the receiver, which must not replace the operator's default one.
RESULT_USERNAME=asvo
SCOUT_PASSWORD=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')
RESULT_PASSWORD=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')
kubectl "${ns[@]}" create secret generic sim-scout --from-literal=username=scout \
    --from-literal=password="$SCOUT_PASSWORD" --dry-run=client -o yaml | kubectl apply -f -
kubectl "${ns[@]}" create secret generic sim-callback --from-literal=username="$RESULT_USERNAME" \
    --from-literal=password="$RESULT_PASSWORD" --dry-run=client -o yaml | kubectl apply -f -

log "starting Kafka and the simulators"
kubectl "${ns[@]}" apply -f "$ROOT/hack/kind/simulators.yaml"
kubectl "${ns[@]}" wait --for=condition=Available --timeout=300s deployment --all

log "installing the chart"
helm upgrade --install "$RELEASE" "$ROOT/charts/mwa-staging" "${ns[@]}" \
    --values "$ROOT/charts/mwa-staging/ci/kind-values.yaml" --wait --timeout 300s
kubectl wait --for=condition=Established --timeout=60s crd/stagingjobs.staging.mwatelescope.org

# Endpoints for the tests, through port-forwards to the in-cluster services, each
# on a free local port that kubectl picks (`:REMOTE`) and prints.
FULLNAME="$RELEASE-mwa-staging"
forward() { # resource remote-port variable: forward, and set variable to the local port
    local out="$WORK/pf-${1//\//-}.log" port=""
    kubectl "${ns[@]}" port-forward "$1" ":$2" >"$out" 2>&1 &
    PIDS+=($!)
    for _ in $(seq 100); do
        port=$(sed -n 's/^Forwarding from 127\.0\.0\.1:\([0-9][0-9]*\) .*/\1/p' "$out")
        port=${port%%$'\n'*}
        [[ -n "$port" ]] && break
        sleep 0.2
    done
    [[ -n "$port" ]] || { log "port-forward of $1 did not start:"; cat "$out" >&2; exit 1; }
    printf -v "$3" '%s' "$port"
}
forward service/sim-callback 8080 CALLBACK_PORT
forward service/sim-banksia 8080 BANKSIA_PORT
forward service/sim-data-files 8080 DATA_FILES_PORT
forward "service/$FULLNAME-operator" 8080 OPERATOR_PORT
# The bundled PostgreSQL (StatefulSet pod 0), for the kubectl-stagingjob plugin.
kubectl "${ns[@]}" wait --for=condition=Ready --timeout=120s "pod/$FULLNAME-postgresql-0"
forward "pod/$FULLNAME-postgresql-0" 5432 POSTGRES_PORT
DB_PASSWORD=$(kubectl "${ns[@]}" get secret "$FULLNAME-postgresql" \
    -o jsonpath='{.data.password}' | base64 -d)

# What the e2e tests read (tests/e2e/target.py). The callback URL the operator is
# given is the in-cluster Service; the tests read the receiver's log and switch
# its failure modes through its control endpoint, port-forwarded.
export MWA_E2E_EXTERNAL=1
export MWA_E2E_KUBECONFIG="$KUBECONFIG"
export MWA_E2E_CALLBACK_URL="http://sim-callback.$NAMESPACE.svc:8080/callback"
export MWA_E2E_CALLBACK_CONTROL_URL="http://127.0.0.1:$CALLBACK_PORT"
export MWA_E2E_SIM_CONTROL_URL="http://127.0.0.1:$BANKSIA_PORT"
export MWA_E2E_DATA_FILES_URL="http://127.0.0.1:$DATA_FILES_PORT"
export MWA_E2E_OPERATOR_URL="http://127.0.0.1:$OPERATOR_PORT"
export MWA_E2E_DATABASE_URL="postgresql://mwa:$DB_PASSWORD@127.0.0.1:$POSTGRES_PORT/mwa_staging"
export MWA_E2E_RESULT_USERNAME="$RESULT_USERNAME"

log "applying examples/observation-job.yaml"
sed "s|\${CALLBACK_URL}|$MWA_E2E_CALLBACK_URL|" "$ROOT/examples/observation-job.yaml" \
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
cd "$ROOT"
.venv/bin/python -m pytest tests/e2e -m "not local_only" -q
log "done"
