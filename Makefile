# The README's two commands: `make demo` and `make test`.
SHELL := /bin/bash
PY := .venv/bin/python
PIPENV_VERSION := 2026.10.3
export PIPENV_VENV_IN_PROJECT := 1

.PHONY: setup test test-faults container-test demo bench lint typecheck dashboard lock kcl-lock clean

## setup: .venv with the locked packages, amazon-kclpy (no jars), the KCL jars of properties/kcl-jars.lock
## (Maven Central or $KCL_MAVEN_REPOSITORY, SHA-256 checked), the emulators
setup:
	bash scripts/setup.sh

## test: the static checks (lint, typecheck), then every tier but the fault suite and the container test
## (PYTEST_ARGS="-k foo" to narrow it); a failing check stops it before pytest starts
test: setup lint typecheck
	$(PY) -m pytest -m "not faults and not container" $(PYTEST_ARGS)

## test-faults: the fault suite (README "Delivery guarantees"): kills, throttling, resharding... on the real daemon,
## each judged by the record ledger; about 15 minutes, so not part of `make test`
test-faults: setup
	$(PY) -m pytest -m faults $(PYTEST_ARGS)

## container-test: build the Dockerfile with podman and run the image against the emulators (root; installs
## podman and makes the stand-in base image on first use: scripts/container_setup.sh)
container-test: setup
	bash scripts/container_test.sh $(PYTEST_ARGS)

## container-docs: docs/container.md and docs/container.json from the container test's figures (CONTAINER_JSON,
## default .local/container/figures.json, which `make container-test` writes)
.PHONY: container-docs
container-docs: setup
	$(PY) -m consumer.tools.containerdocs $(or $(CONTAINER_JSON),.local/container/figures.json)

## demo: the end-to-end demo (state in .local/)
demo: setup
	$(PY) -m consumer demo

## bench: the benchmark (docs/performance.md): a table on stdout, JSON in .local/bench/ (BENCH_ARGS=--quick)
bench: setup
	$(PY) -m consumer bench $(BENCH_ARGS)

## bench-docs: docs/performance.md and docs/performance.json from a full run's report (BENCH_JSON, default
## .local/bench/bench.json, which `make bench` writes)
.PHONY: bench-docs
bench-docs: setup
	$(PY) -m consumer bench --docs-from $(or $(BENCH_JSON),.local/bench/bench.json)

## soak: the metrics soak (docs/metrics-soak.md): process lifetimes against one metrics folder, with compaction and
## without; a table on stdout, JSON in .local/bench/soak.json (SOAK_ARGS="--lifetimes 1000")
.PHONY: soak soak-docs
soak: setup
	$(PY) -m consumer bench --soak $(SOAK_ARGS)

## soak-docs: docs/metrics-soak.md and docs/metrics-soak.json from a soak's report (SOAK_JSON, default
## .local/bench/soak.json)
soak-docs: setup
	$(PY) -m consumer bench --soak --docs-from $(or $(SOAK_JSON),.local/bench/soak.json)

## lint: ruff
lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

## typecheck: the layers' import contract (import-linter, pyproject.toml) and mypy in strict mode on the runtime,
## the pipeline, the model, the CLI and record_processor.py
typecheck: setup
	.venv/bin/lint-imports
	$(PY) -m mypy

## dashboard: rebuild dashboards/ride-consumer.json from dashboards/build.py (grafana-foundation-sdk)
dashboard: setup
	$(PY) dashboards/build.py

## lock: re-resolve Pipfile into Pipfile.lock (pipenv in .cache/pipenv; no Maven access needed:
## amazon-kclpy's metadata comes from its setup.py without downloading jars)
lock:
	test -x .cache/pipenv/bin/pipenv || { python3.11 -m venv .cache/pipenv && .cache/pipenv/bin/pip install --quiet pipenv==$(PIPENV_VERSION); }
	PIPENV_VERBOSITY=-1 .cache/pipenv/bin/pipenv lock

## kcl-compare: the KCL version comparison on the real daemon (docs/kcl-versions.md; about half an hour, not in CI):
## the table on stdout, JSON in .local/kcl-compare/ (KCL_COMPARE_ARGS="--variant kcl3" to narrow it)
.PHONY: kcl-compare kcl-compare-docs
kcl-compare: setup
	$(PY) -m consumer kcl-compare $(KCL_COMPARE_ARGS)

## kcl-compare-docs: docs/kcl-versions.md and docs/kcl-versions.json from a comparison report (KCL_COMPARE_JSON,
## default .local/kcl-compare/kcl-compare.json)
kcl-compare-docs: setup
	$(PY) -m consumer kcl-compare --docs-from $(or $(KCL_COMPARE_JSON),.local/kcl-compare/kcl-compare.json)

## kcl-lock: rewrite properties/kcl-jars.lock from the pom of the amazon-kclpy release Pipfile.lock pins, with
## Maven's resolution of kcl/pom.xml (needs mvn; the install does not)
kcl-lock:
	$(or $(wildcard $(PY)),python3) scripts/kcl_lock.py

## kcl-lock-compare: rewrite the lock of the KCL 3.x jars that `python -m consumer kcl-compare` runs
## (kcl/kclpy-3.1.3/: amazon-kclpy 3.1.3, KCL 3.1.3)
.PHONY: kcl-lock-compare
kcl-lock-compare:
	$(or $(wildcard $(PY)),python3) scripts/kcl_lock.py --wrapper kcl/kclpy-3.1.3/pom.xml \
	    --out kcl/kclpy-3.1.3/kcl-jars.lock --kclpy 3.1.3 \
	    --sdist-sha256 146bf4a85c79eb6d3c842075d7fe2a1ffad3f2944c24db202add5e2a875259c9

## clean: remove everything setup created (the download cache in .cache/ stays)
clean:
	rm -rf .venv node_modules
