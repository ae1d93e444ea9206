# Development entry points. `make test` is what CI runs (.ci/run).
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
VENV_STAMP := $(VENV)/.installed
STACK_ROOT ?= .stack
SERVICES ?= operator,kafka-bridge,gateway
APT_PACKAGES := haproxy postgresql-15
# The node mode (make cluster, tests/cluster): container runtime, image builder, base rootfs.
NODE_APT_PACKAGES := containerd runc docker.io debootstrap
LINT_PATHS := mwa_staging operator/mwa_staging_operator mwa_staging_gateway kafka_bridge devstack bench
PYTEST_ARGS ?=

# The Go toolchain's usual home, for shells that do not have it on PATH.
export PATH := $(PATH):/usr/local/go/bin

.PHONY: help deps apt venv build up down status env lint format test demo bench bench-quick bench-bridge bench-operator bench-gateway chart-crd image images cluster kind-e2e soak

help:
	@echo "make demo | cluster | test | up | down | status | env | lint | format | bench | bench-quick | soak | deps | build | chart-crd | image | images | kind-e2e"

## deps: Debian packages and the project virtualenv (quick when done)
deps: apt venv

apt:
	@missing=""; \
	for p in $(APT_PACKAGES) $(NODE_APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	command -v java >/dev/null 2>&1 || missing="$$missing openjdk-17-jre-headless"; \
	command -v mvn >/dev/null 2>&1 || missing="$$missing maven"; \
	if [ -n "$$missing" ]; then \
	  echo "apt-get install$$missing"; \
	  sudo=""; [ "$$(id -u)" -eq 0 ] || sudo=sudo; \
	  $$sudo apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -q --no-install-recommends $$missing </dev/null; \
	fi; \
	command -v go >/dev/null 2>&1 || { echo "the Go toolchain (1.24+) is needed: go not on PATH" >&2; exit 1; }

venv: $(VENV_STAMP)

$(VENV_STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]'
	@touch $@

## build: kube-apiserver, kubectl, kubelet, controller-manager, scheduler, etcd, helm, Kafka jars; cached per version
build: venv
	@$(PY) -m devstack.build >&2  # progress, so that `make bench > out.json` is JSON

## up: start the stack in .stack/ (idempotent) and print where things are
up: deps build
	$(PY) -m devstack up --root $(STACK_ROOT) --services $(SERVICES)

down:
	@if [ -x $(PY) ]; then $(PY) -m devstack down --root $(STACK_ROOT); fi

status:
	@$(PY) -m devstack status --root $(STACK_ROOT) || true

env:
	@$(PY) -m devstack env --root $(STACK_ROOT)

lint: venv
	$(VENV)/bin/ruff check $(LINT_PATHS) tests
	$(VENV)/bin/ruff format --check $(LINT_PATHS) tests
	$(VENV)/bin/mypy $(LINT_PATHS)

format: venv
	$(VENV)/bin/ruff check --fix $(LINT_PATHS) tests
	$(VENV)/bin/ruff format $(LINT_PATHS) tests

## test: everything CI checks; pytest starts its own stack on free ports
test: deps build lint
	@rc=0; $(VENV)/bin/pytest $(PYTEST_ARGS) || rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: that is a failure here" >&2; exit 1; fi; \
	exit $$rc

## demo: the stack with the operator and the bridge, the examples applied and followed
demo: up
	$(PY) -m devstack.demo --root $(STACK_ROOT)

## bench: every benchmark, each on its own stack (one JSON document on stdout; bench/__main__.py)
bench: deps build
	@$(PY) -m bench $(BENCH_ARGS)

## bench-quick: the same with small numbers on one stack (make test runs it as a test)
bench-quick: deps build
	@$(PY) -m bench --quick

bench-bridge: deps build
	@$(PY) -m bench.bridge_bench $(BRIDGE_BENCH_ARGS)

## bench-operator: many jobs, idle cost, big job, restage, latency under load, API server share
bench-operator: deps build
	@$(PY) -m bench.operator_bench $(OPERATOR_BENCH_ARGS)

## bench-gateway: a 100,000-file POST /staging: time to 202, to Staging, to the callback
bench-gateway: deps build
	@$(PY) -m bench.gateway_bench $(GATEWAY_BENCH_ARGS)

## soak: the chaos soak on a stack of its own (SOAK_MINUTES, default 10; SOAK_SEED replays)
SOAK_MINUTES ?= 10
soak: deps build
	SOAK_MINUTES=$(SOAK_MINUTES) SOAK_SEED=$(SOAK_SEED) $(PY) -m devstack.soak

## chart-crd: copy the CRD into the chart (a test fails when they differ)
chart-crd:
	cp crds/stagingjobs.yaml charts/mwa-staging/files/crds/stagingjobs.yaml

## cluster: the stack with a node, the chart installed on it, every pod Ready (idempotent)
cluster: deps build
	$(PY) -m devstack.cluster --root $(STACK_ROOT)

## image: the project's image from its Dockerfile, on a local Python base (cached by input hash)
image: apt venv
	$(PY) -m devstack.images --project-only

## images: every image the node runs (project, HAProxy, PostgreSQL, pause stand-ins)
images: apt venv
	$(PY) -m devstack.images

## kind-e2e: kind cluster + image + chart + the e2e tests (needs Docker and kind; not run by CI)
kind-e2e: venv
	hack/kind-e2e.sh
