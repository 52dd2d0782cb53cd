# Lapse — temporary RBAC for Kubernetes.
# Every target documents itself: `make help` lists them.

SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# `make test`'s pytest workers, each with its own local API and operator (`auto`: one a core).
TEST_WORKERS ?= 2
KUBEAPI_PORT ?= 6443
KUBEAPI_DIR ?= .kubeapi
export KUBEAPI_PORT

.DEFAULT_GOAL := help

##@ General

.PHONY: help
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*##"; printf "\nUsage:\n  make \033[36m<target>\033[0m\n"} \
		/^[a-zA-Z_0-9-]+:.*?##/ { gsub(/\$$\$$/, "$$", $$2); printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2 } \
		/^##@/ { printf "\n\033[1m%s\033[0m\n", substr($$0, 5) }' $(MAKEFILE_LIST)

# One install at a time: `make kubeapi &` and the next command may both need the venv first.
$(STAMP): pyproject.toml
	@mkdir -p $(VENV)
	@flock $(VENV)/.lock $(SHELL) -c 'set -e; test $(STAMP) -nt pyproject.toml && exit 0; \
		test -x $(BIN)/python || $(PYTHON) -m venv $(VENV); \
		$(BIN)/pip install --quiet --upgrade pip; \
		$(BIN)/pip install --quiet -e ".[dev]"; \
		touch $(STAMP)'

.PHONY: venv
venv: $(STAMP) ## Create .venv with Lapse, its CLI and kubectl in .venv/bin.

##@ Run

.PHONY: demo
demo: $(STAMP) ## Run Lapse end to end: a request is granted, then lapses (local API unless KUBECONFIG is set).
	$(BIN)/python -m demo

.PHONY: kubeapi
kubeapi: $(STAMP) ## Serve the local Kubernetes API on 127.0.0.1:$KUBEAPI_PORT (kubeconfig in $$KUBEAPI_DIR/kubeconfig).
	@echo 'Local Kubernetes API starting. In your shell: export KUBECONFIG=$(abspath $(KUBEAPI_DIR))/kubeconfig'
	@echo '(or: eval "$$(make -s env)", which also puts kubectl and kubectl lapse on PATH)'
	$(BIN)/python -m kubeapi --port $(KUBEAPI_PORT) --kubeconfig $(KUBEAPI_DIR)/kubeconfig

# Printed, not run: make cannot change the shell it was called from.
.PHONY: env
env: ## Print the exports that put kubectl and kubectl lapse on PATH (and the local API's KUBECONFIG if none is set); eval "$$(make -s env)".
	@echo 'export PATH="$(CURDIR)/$(BIN):$$PATH"'
	@if [ -z "$$KUBECONFIG" ]; then echo 'export KUBECONFIG="$(abspath $(KUBEAPI_DIR))/kubeconfig"'; fi

# What `make run` needs on a fresh cluster, and the sample team that the README's examples use:
# the namespace, the CRDs (waited for, so the policies after them find their kind), the
# operator's ServiceAccount and RBAC, the roles of requesters, approvers and SREs, and the
# sample policies. Everything but the operator's Deployment, which `make run` replaces.
SAMPLES := namespace requester-clusterrole approver-clusterrole breakglass-clusterrole \
	policy policy-approvers breakglass-policy

.PHONY: install
install: $(STAMP) ## Install the namespace, CRDs, RBAC, sample roles and policies into KUBECONFIG's cluster.
	@$(BIN)/python -m demo.reachable
	$(BIN)/kubectl apply -f deploy/base/namespace.yaml -f deploy/base/serviceaccount.yaml \
		-f deploy/base/rbac.yaml
	$(BIN)/kubectl apply -f crds/
	$(BIN)/kubectl wait --for condition=Established --timeout 60s -f crds/
	$(BIN)/kubectl apply $(foreach s,$(SAMPLES),-f deploy/samples/$(s).yaml)

.PHONY: run
run: $(STAMP) ## Run the operator in the foreground against the cluster named by KUBECONFIG.
	$(BIN)/lapse-operator

.PHONY: ready
ready: $(STAMP) ## Wait until the operator (`make run &`) answers: its webhooks registered and serving.
	@$(BIN)/python -m demo.ready

##@ Image and release

IMAGE ?= ghcr.io/lapse-dev/lapse:$(shell sed -n 's/^version = "\(.*\)"$$/\1/p' pyproject.toml)
export IMAGE

.PHONY: image
image: ## Build the operator image with buildah, no Docker daemon (base from Debian's packages unless BASE=...).
	release/image.sh build

.PHONY: image-test
image-test: $(STAMP) ## Run the built image as the Deployment would, against the local API: grant, lapse, /healthz, non-root.
	LAPSE_TEST_IMAGE=$(IMAGE) $(BIN)/pytest tests/image -q

# The real cluster of the development and CI machines (its README): `eval "$$($(REALK8S)/up.sh)"`.
REALK8S ?= $(abspath ../shared/realk8s)

.PHONY: image-load
image-load: ## Put the image built by `make image` on the node of the real cluster in $$REALK8S.
	@mkdir -p .image
	podman save --format oci-archive -o .image/lapse.tar $(IMAGE)
	$(REALK8S)/load-image.sh .image/lapse.tar
	@rm -f .image/lapse.tar

.PHONY: test-install
test-install: $(STAMP) ## On KUBECONFIG's real cluster, image on its node: each install route, HA, uninstall.
	LAPSE_TEST_CLUSTER=kubeconfig LAPSE_TEST_INSTALL=1 $(BIN)/pytest tests/install -v

# The older release an upgrade starts from: the first commit whose image serves its webhooks
# in pods (releases before it cannot grant on a real cluster, so nothing could carry over).
UPGRADE_FROM ?= 1fde53e
UPGRADE_IMAGE := ghcr.io/lapse-dev/lapse:upgrade-from

.PHONY: test-upgrade
test-upgrade: $(STAMP) ## On KUBECONFIG's real cluster: install UPGRADE_FROM's image and manifests, grant, upgrade to this tree.
	rm -rf .image/upgrade && mkdir -p .image/upgrade
	git archive $(UPGRADE_FROM) | tar -x -C .image/upgrade
	cd .image/upgrade && IMAGE=$(UPGRADE_IMAGE) release/image.sh build
	podman save --format oci-archive -o .image/upgrade.tar $(UPGRADE_IMAGE)
	$(REALK8S)/load-image.sh .image/upgrade.tar
	LAPSE_TEST_CLUSTER=kubeconfig LAPSE_TEST_INSTALL=1 LAPSE_TEST_UPGRADE_FROM=$(abspath .image/upgrade) \
		LAPSE_TEST_UPGRADE_IMAGE=$(UPGRADE_IMAGE) $(BIN)/pytest tests/install/test_upgrade.py -v

.PHONY: bench-smoke-real
bench-smoke-real: $(STAMP) ## On KUBECONFIG's real cluster, auditing to AUDIT_LOG_PATH, no Lapse installed: a small benchmark, every request counted.
	LAPSE_TEST_CLUSTER=kubeconfig LAPSE_TEST_AUDIT_LOG=$(AUDIT_LOG_PATH) $(BIN)/pytest tests/conformance/test_audit_log.py tests/bench/test_bench_real_smoke.py -v

.PHONY: test-real
test-real: $(STAMP) ## Run the end-to-end suite against KUBECONFIG's real cluster (the operator as a process).
	LAPSE_TEST_CLUSTER=kubeconfig $(BIN)/pytest tests/e2e -q

.PHONY: test-real-pods
test-real-pods: $(STAMP) ## Run the end-to-end suite against KUBECONFIG's real cluster, Lapse installed in pods (image on its node).
	LAPSE_TEST_CLUSTER=kubeconfig LAPSE_TEST_OPERATOR=in-cluster $(BIN)/pytest tests/e2e -q

# Two more control planes (no node) in their own state dirs under /tmp/lapse-fleet, ports 26xxx
# and 27xxx: never beside a node cluster of the same kit in CI (.ci/run runs it before its own).
.PHONY: test-fleet-real
test-fleet-real: $(STAMP) ## Run the fleet tests on two real control planes of the kit in $$REALK8S (up.sh --no-node), an operator on each.
	LAPSE_TEST_FLEET=realk8s REALK8S=$(REALK8S) $(BIN)/pytest tests/fleet -v

.PHONY: constraints
constraints: $(STAMP) ## Pin the image's dependencies (release/constraints.txt) to the versions in .venv.
	$(BIN)/python -m release.constraints

.PHONY: release-manifests
release-manifests: $(STAMP) ## Render the install YAML a release attaches (dist/install.yaml) for the version in pyproject.toml.
	$(BIN)/python -m release.manifests --dist dist

.PHONY: version
version: $(STAMP) ## Stamp pyproject.toml's version (or VERSION=x.y.z, written there first) into the chart and manifests.
	$(BIN)/python -m release.version $(if $(VERSION),--set $(VERSION))

##@ Development

.PHONY: test
test: $(STAMP) ## Run the whole test suite: lint, types, unit, local API conformance, end to end (TEST_WORKERS in parallel).
	$(MAKE) --no-print-directory lint
	$(BIN)/pytest tests -n $(TEST_WORKERS)

.PHONY: test-unit
test-unit: $(STAMP) ## Run only the unit tests (no cluster).
	$(BIN)/pytest tests/unit

.PHONY: lint
lint: $(STAMP) ## ruff (lint and format check), mypy --strict, import layers.
	$(BIN)/ruff check operator tests kubeapi demo plugins release
	$(BIN)/ruff format --check operator tests kubeapi demo plugins release
	$(BIN)/mypy
	$(BIN)/lint-imports

.PHONY: fmt
fmt: $(STAMP) ## Format and autofix with ruff.
	$(BIN)/ruff format operator tests kubeapi demo plugins release
	$(BIN)/ruff check --fix operator tests kubeapi demo plugins release

.PHONY: crds
crds: $(STAMP) ## Regenerate crds/ from the pydantic models.
	$(BIN)/python -m lapse.crdgen crds/ deploy/helm/lapse/crds/

.PHONY: bench
bench: $(STAMP) ## Benchmark grant latency, revocation lag, throughput, restart recovery (BENCH_N=1000,10000).
	$(BIN)/python -m bench.run

.PHONY: bench-history
bench-history: $(STAMP) ## On BENCH_KUBECONFIG's cluster: retention through a 5-min syslog outage, start-up with 100,000 ended requests.
	$(BIN)/python -m bench.history

.PHONY: bench-fleet
bench-fleet: $(STAMP) ## Two real control planes of $$REALK8S, 1,000 grants each: time `kubectl lapse list --all-contexts -A`, also with one cluster down.
	REALK8S=$(REALK8S) $(BIN)/python -m bench.fleet

.PHONY: plugin
plugin: $(STAMP) ## Build the krew archives of kubectl lapse and their manifest in dist/.
	$(BIN)/python -m plugins.krew --dist dist

.PHONY: clean
clean: ## Remove the venv and local state.
	rm -rf $(VENV) .kubeapi .demo .pytest_cache .mypy_cache .ruff_cache
