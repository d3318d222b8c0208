# flashsale: the one entry point for building and testing. `make help` lists the targets.
SHELL := /usr/bin/env bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

CARGO ?= cargo
# Connection settings written by the service scripts (git-ignored, machine-local).
SERVICES_ENV := hack/.services.env
# Control plane for the operator's tests: its engineer sets these two lines.
CONTROL_PLANE_UP ?= true
CONTROL_PLANE_ENV ?=

.PHONY: help
help: ## list the targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

.PHONY: services-up
services-up: ## start local Postgres, Redis and Kafka (hack/services.sh up)
	hack/services.sh up

.PHONY: services-down
services-down: ## stop them
	hack/services.sh down

.PHONY: build
build: ## build the workspace
	$(CARGO) build --workspace --all-targets

.PHONY: test
test: services-up ## services up, then every test of the workspace against them
	$(CONTROL_PLANE_UP)
	. $(SERVICES_ENV); $(if $(CONTROL_PLANE_ENV),. $(CONTROL_PLANE_ENV);) $(CARGO) test --workspace

.PHONY: run
run: services-up ## run booking-app (STAGE=postgres by default) against the local services on :8080
	. $(SERVICES_ENV); $(CARGO) run -p booking-app -- serve --listen-addr 127.0.0.1:8080
