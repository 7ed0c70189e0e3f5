# CX Signals: `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The scoring core compiled with mypyc (streams/core/native.py); rebuilt when a core source changes.
# NATIVE=0 skips the build (with `make clean-native`: the core runs as Python, e.g. to profile it).
NATIVE ?= 1
NATIVE_STAMP := streams/core/native-build.json
ifeq ($(NATIVE),1)
INSTALL_NATIVE := $(NATIVE_STAMP)
endif

.DEFAULT_GOAL := help

.PHONY: help
help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "CX Signals needs Python >= 3.10; set PYTHON=python3.11")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $(STAMP)

.PHONY: install
install: $(STAMP) $(INSTALL_NATIVE) ## Create .venv, install CX Signals with its dev dependencies, compile the core

$(NATIVE_STAMP): $(STAMP) $(wildcard streams/core/*.py) streams/processing.py streams/deadlines.py \
		streams/expiry.py streams/batch_observer.py streams/pipeline.py streams/partitioner.py \
		streams/huge_arenas.c
	@$(BIN)/python streams/core/native.py build || { echo "warning: mypyc could not compile the \
	scoring core (see above: a type error in streams/core, or no C compiler): it runs as Python, \
	about 1.45x slower; built again when a core source changes or after make clean-native."; \
	touch $@; }

.PHONY: native
native: $(NATIVE_STAMP) ## Compile the scoring core with mypyc (make install does it; about a minute)

.PHONY: clean-native
clean-native: ## Remove the compiled core: streams/core runs as Python (then NATIVE=0 keeps it so)
	$(BIN)/python streams/core/native.py clean

.PHONY: services
services: ## Start Kafka, ClickHouse and Prometheus (compose with Docker, else native) and wait
	@deploy/services.sh up

.PHONY: services-down
services-down: ## Stop the services this project started
	@deploy/services.sh down

.PHONY: services-status
services-status: ## Show which services answer
	@deploy/services.sh status

.PHONY: setup
setup: install services ## Install, start services, create topics, apply Kafka ACLs and ClickHouse migrations
	$(BIN)/cxsignals topics create
	$(BIN)/cxsignals acls apply
	$(BIN)/cxsignals migrate

.PHONY: run
run: setup ## Set up everything, then run a worker, a sink and the event simulator (Ctrl-C stops them)
	@deploy/run.sh

.PHONY: test
test: setup ## Run the whole test suite (unit + integration against the real services)
	$(BIN)/pytest tests -q -p no:cacheprovider -m "not chaos" --durations=40

.PHONY: chaos
chaos: setup ## Run every fault test, the long loops too (kill -9, outages, rebalances; see docs/reliability.md)
	$(BIN)/pytest tests/faults -q -p no:cacheprovider

.PHONY: test-unit
test-unit: install ## Run the unit tests only (no services needed)
	$(BIN)/pytest tests/unit -q

.PHONY: lint
lint: install ## ruff + mypy
	$(BIN)/ruff check .
	$(BIN)/mypy cxsignals streams schemas sinks bench tests

.PHONY: bench
bench: setup ## Benchmark worker and sink processes on the local Kafka and ClickHouse (BENCH_ARGS="--quick", "--workers 2"; writes bench/results/)
	$(BIN)/python -m bench.run

.PHONY: schemas
schemas: install ## Re-export the JSON Schemas of the event contract into schemas/json/
	$(BIN)/cxsignals schema export schemas/json

.PHONY: clean
clean: ## Remove the virtualenv and local state (stops the services first)
	-@deploy/services.sh down
	rm -f streams/core/*.so streams/*.so streams/core/native-build.json
	rm -rf $(VENV) .state .mypy_cache .ruff_cache .pytest_cache build
