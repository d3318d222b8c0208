# flashsale: the one entry point for building and testing. `make help` lists the targets.
SHELL := /usr/bin/env bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

CARGO ?= cargo
# Connection settings written by the service scripts (git-ignored, machine-local).
SERVICES_ENV := hack/.services.env
# Kubernetes control plane on loopback for the operator's tests and the chart's checks
# (hack/control-plane.sh; idempotent: a healthy one is reused).
CONTROL_PLANE_UP ?= hack/control-plane.sh up
CONTROL_PLANE_ENV ?= hack/.control-plane.env

.PHONY: help
help: ## list the targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

.PHONY: services-up
services-up: ## start local Postgres, Redis and Kafka (hack/services.sh up)
	hack/services.sh up

.PHONY: services-down
services-down: ## stop them
	hack/services.sh down

.PHONY: control-plane-up
control-plane-up: ## start the Kubernetes control plane on loopback (hack/control-plane.sh up)
	$(CONTROL_PLANE_UP)

.PHONY: control-plane-down
control-plane-down: ## stop it (hack/control-plane.sh down)
	hack/control-plane.sh down

.PHONY: node-up
node-up: ## join one real node (containerd, kubelet, kube-proxy, CoreDNS; root) to the control plane (hack/node.sh up)
	hack/node.sh up

.PHONY: node-down
node-down: ## remove it: pods, processes, bridge, iptables rules, Node object (hack/node.sh down)
	hack/node.sh down

.PHONY: node-smoke
node-smoke: ## restricted pods, a Service, DNS and a volume on the real node (hack/node.sh smoke)
	hack/node.sh smoke

# The cache of hack/lib.sh (FLASHSALE_CACHE): tools, Go modules, the services' data.
FLASHSALE_CACHE ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/flashsale
.PHONY: clean-local
clean-local: ## stop the services, the control plane and (as root) the real node, remove the cache (~/.cache/flashsale) and the env files; keeps target/ and the apt packages
	hack/services.sh down
	hack/control-plane.sh down
	[ "$$(id -u)" != 0 ] || hack/node.sh down
	chmod -R u+w "$(FLASHSALE_CACHE)" 2>/dev/null || true
	rm -rf "$(FLASHSALE_CACHE)"
	rm -f $(SERVICES_ENV) $(CONTROL_PLANE_ENV)

.PHONY: fmt
fmt: ## format the workspace (rustfmt.toml); make test fails on unformatted code
	$(CARGO) fmt --all

.PHONY: lint
lint: ## rustfmt check, clippy with warnings as errors, no module cycle (hack/module-cycles.py), the unit tests of hack's Python scripts
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	python3 hack/module-cycles.py operator/src booking-app/src contract/src
	python3 -m unittest discover --start-directory hack --pattern '*_test.py'

.PHONY: build
build: ## build the workspace
	$(CARGO) build --workspace --all-targets

.PHONY: test
test: services-up ## lint (fmt, clippy, module cycles, hack's Python tests), services up, control plane up, every test of the workspace, the fuzz run, the README's local commands and make demo per stage, the chart's checks, the real-node e2e
	TEST_NODE=$(TEST_NODE) hack/prebuild.sh
	$(MAKE) --no-print-directory lint
	. $(SERVICES_ENV); $(CARGO) test --workspace --no-run
	$(CONTROL_PLANE_UP)
	. $(SERVICES_ENV); $(if $(CONTROL_PLANE_ENV),. $(CONTROL_PLANE_ENV);) CARGO=$(CARGO) hack/test-workspace.sh
	$(MAKE) --no-print-directory test-node E2E_MODE=e2e-start
	$(MAKE) --no-print-directory fuzz
	FLASHSALE_OPERATOR="$${CARGO_TARGET_DIR:-target}/debug/flashsale-operator" FLASHSALE_BOOKING_APP="$${CARGO_TARGET_DIR:-target}/debug/booking-app" $(MAKE) --no-print-directory test-demo
	$(MAKE) --no-print-directory test-faults
	FLASHSALE_OPERATOR="$${CARGO_TARGET_DIR:-target}/debug/flashsale-operator" hack/test-chart.sh
	$(if $(filter 0,$(TEST_NODE)),,hack/node.sh e2e-wait)

# The real node needs root (bridge, iptables, mounts, containerd). TEST_NODE=0 leaves it out, and
# says so: nothing else runs the operator's pods as containers. Inside make test the e2e runs in
# the background (E2E_MODE=e2e-start) beside the fuzz run, the demos, the fault tests and the
# chart's checks, none of which touches its namespace or the node, and make test waits for it
# at the end (hack/node.sh e2e-wait).
TEST_NODE ?= 1
E2E_MODE ?= e2e
.PHONY: test-node
test-node: ## the operator's pods as real containers: node up, images, then per stage a sale Ready, bookings through its Service, calibration, Redis pod deleted, redis -> kafka switch (hack/node.sh e2e; root; TEST_NODE=0 skips it, loudly)
ifeq ($(TEST_NODE),0)
	@echo "=== SKIPPED: the real-node e2e (TEST_NODE=0): no container of a FlashSale was started ===" >&2
else
	hack/node.sh up
	FLASHSALE_OPERATOR="$${FLASHSALE_OPERATOR:-$${CARGO_TARGET_DIR:-target}/debug/flashsale-operator}" FLASHSALE_BOOKING_APP="$${FLASHSALE_BOOKING_APP:-$${CARGO_TARGET_DIR:-target}/debug/booking-app}" hack/node.sh $(E2E_MODE)
endif

.PHONY: fuzz
fuzz: services-up ## schemathesis (pinned, from PyPI) drives booking-app from its own /openapi.json; zero failures (hack/fuzz.sh)
	hack/fuzz.sh

.PHONY: test-demo
test-demo: services-up ## the README's plan transcripts, its "Run booking-app locally" block and `make demo STAGE=...` for each stage, results checked (hack/test-demo.sh; TEST_DEMO_*)
	hack/test-demo.sh

.PHONY: test-faults
# --workspace rather than -p booking-app: the main run's feature set, so nothing is rebuilt.
test-faults: services-up ## fault tests that kill the shared services (kill -9 Redis, stop/kill -9 Kafka): alone, after every other test
	. $(SERVICES_ENV); $(CARGO) test --workspace --test redis_faults -- --ignored --test-threads=1
	. $(SERVICES_ENV); $(CARGO) test --workspace --test kafka_broker_faults -- --ignored --test-threads=1

.PHONY: run
run: services-up ## run booking-app (STAGE=postgres by default) against the local services on :8080
	. $(SERVICES_ENV); $(CARGO) run -p booking-app -- serve --listen-addr 127.0.0.1:8080

# --- The kind quickstart and packaging (hack/cluster.sh; needs docker or podman, kind, helm, kubectl)

.PHONY: up
up: ## kind cluster, images, operator by Helm, examples/redis.yaml until Ready; API on localhost:8080
	hack/cluster.sh up

.PHONY: down
down: ## delete the kind cluster
	hack/cluster.sh down

.PHONY: images
images: ## build the booking-app and operator images (docker or podman)
	hack/cluster.sh images

.PHONY: images-local
images-local: ## the images without Docker: booking-app, operator and stand-ins for Postgres, Redis, Kafka as ~/.cache/flashsale/images/*.tar (hack/images.sh; root; CONTAINERD_ADDRESS imports them)
	hack/images.sh build

.PHONY: images-verify
images-verify: ## run each local image with runc as the operator's pods would, and check it answers (hack/images.sh verify)
	hack/images.sh verify

.PHONY: deploy
deploy: ## load the images built last into the kind cluster and helm upgrade the operator
	hack/cluster.sh deploy

.PHONY: stress
stress: ## loadgen against the cluster's booking API (STRESS_URL, STRESS_RATE, STRESS_DURATION)
	hack/cluster.sh stress

.PHONY: crds
crds: ## regenerate crds/flashsale.yaml from the Rust types, and the chart's copy of it
	$(CARGO) run -q -p flashsale-operator -- crd > crds/flashsale.yaml.tmp
	mv crds/flashsale.yaml.tmp crds/flashsale.yaml
	cp crds/flashsale.yaml charts/flashsale-operator/files/flashsale.yaml

.PHONY: test-chart
test-chart: ## only the chart's checks (lint, server-side dry runs, RBAC with the real operator)
	hack/test-chart.sh

# --- Measuring (hack/bench.sh, hack/demo.sh, hack/k6.sh; booking-app loadgen is the instrument)

.PHONY: bench
bench: ## every stage at c=256 (and 16) next to bare axum and its store's limit, spikes, drain, calibration, operator at scale -> bench/results.md (BENCH_*)
	hack/bench.sh

.PHONY: calibrate
calibrate: ## what a FlashSale calibration would measure here: per-pod rps of each stage within the p99 SLO, and the sizing (CALIBRATE_*)
	hack/calibrate.sh

.PHONY: demo
demo: ## a sale on this machine, no cluster: services, booking-app of STAGE (postgres|redis|kafka), loadgen, invariants
	STAGE=$(or $(STAGE),redis) hack/demo.sh

URL ?= http://127.0.0.1:8080
.PHONY: stress-k6
stress-k6: ## loadtest/flashsale.js with k6 (built from its Go module, never linked) against URL (VUS, DURATION, TICKETS)
	URL=$(URL) hack/k6.sh run
