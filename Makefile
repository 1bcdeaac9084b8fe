# The commands of this project; each creates or reuses the virtual environment it needs.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The one list of exact versions, with hashes, that every install reads (make lock writes them).
RUNTIME_LOCK := requirements/runtime.txt
DEV_LOCK := requirements/dev.txt
PIP_INSTALL = $(BIN)/pip install --quiet --require-hashes --no-build-isolation
# The header names `make lock`; --no-emit-find-links keeps a machine's PIP_FIND_LINKS out.
PIP_COMPILE = CUSTOM_COMPILE_COMMAND="make lock" $(BIN)/pip-compile --quiet --generate-hashes \
	--allow-unsafe --strip-extras --no-emit-find-links $(LOCK_OPTIONS)

.PHONY: run test unit faults screenshot lint typecheck lock offline-images swarm-up swarm-down clean

# The locked pip and setuptools go in first, so that the lock's one sdist (uwsgitop) and the
# project itself are built with them rather than with whatever a build environment would fetch.
$(STAMP): $(DEV_LOCK) pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	awk '/^[a-z]/ { keep = /^(pip|setuptools)==/ } keep' $(DEV_LOCK) >$(VENV)/bootstrap.txt
	$(PIP_INSTALL) --no-deps --requirement $(VENV)/bootstrap.txt
	$(PIP_INSTALL) --requirement $(DEV_LOCK)
	$(BIN)/pip install --quiet --no-deps --no-build-isolation --editable .
	touch $@

## lock: rewrite requirements/*.txt from pyproject.toml, keeping every pin that still fits
##       (LOCK_OPTIONS=--upgrade to take the newest versions)
# The runtime lock first: the dev lock is held to its versions, so both agree.
lock: $(STAMP)
	$(PIP_COMPILE) --output-file $(RUNTIME_LOCK) pyproject.toml
	$(PIP_COMPILE) --extra dev --build-deps-for editable --constraint $(RUNTIME_LOCK) \
		--output-file $(DEV_LOCK) pyproject.toml

## run: nginx on 127.0.0.1:$HTTP_PORT (8080) in front of uWSGI, in the foreground; Ctrl-C stops both
run: $(STAMP)
	$(BIN)/python -m app.serve

lint: $(STAMP)
	$(BIN)/ruff check app tests
	$(BIN)/ruff format --check app tests

typecheck: $(STAMP)
	$(BIN)/mypy

## test: lint, type-check, then every test against the real uWSGI, nginx and Docker
test: lint typecheck
	$(BIN)/pytest

## unit: only the fast tests, in about 20 seconds: none starts uWSGI, nginx or Docker (PostgreSQL, yes)
unit: $(STAMP)
	$(BIN)/pytest -m "not integration and not docker and not faults"

## faults: only the fault suite (load, kills, reloads, a full disk, hostile input), with its figures
faults: $(STAMP)
	$(BIN)/pytest -m faults

## screenshot: the dashboard's picture in the README (docs/dashboard.png), taken by its browser test
screenshot: $(STAMP)
	DASHBOARD_SCREENSHOT=$(CURDIR)/docs/dashboard.png $(BIN)/pytest tests/test_dashboard.py -q

## offline-images: base images and a wheelhouse built from Debian packages and PyPI, no registry
offline-images: $(STAMP)
	scripts/offline-images.sh

## swarm-up: the stack on this engine's swarm: STACK_NAME, REPLICAS (3), HTTP_PORT, OPERATOR_TOKEN,
##           DATABASE_PASSWORD (generated when unset) from the environment (scripts/swarm.sh)
swarm-up: $(STAMP)
	scripts/swarm.sh up

## swarm-down: remove the stack (PURGE=1: its database volume and secrets too)
swarm-down:
	scripts/swarm.sh down

clean:
	rm -rf var .pytest_cache .mypy_cache .ruff_cache

## bench: every table of bench/ (HTTP, threads or processes, jobs, memory) in full, about 20 minutes;
##        writes bench/results/latest.md, latest.json and the plots. Never part of `make test`.
## bench-quick: the same tables, fewer and shorter runs (under 5 minutes), into var/bench/results-quick
BENCH_VENV := bench/.venv
BENCH_STAMP := $(BENCH_VENV)/.installed
BENCH_TOOLS := wrk redis-server nginx

.PHONY: bench bench-quick bench-tools bench-lock

# The peers and the plotting tools, pinned with hashes, in their own environment.
$(BENCH_STAMP): bench/requirements.txt
	test -x $(BENCH_VENV)/bin/python || $(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/pip install --quiet --require-hashes --requirement bench/requirements.txt
	touch $@

# wrk and redis-server come from Debian: installed when root, else named.
bench-tools:
	@missing=""; for tool in $(BENCH_TOOLS); do command -v $$tool >/dev/null || missing="$$missing $$tool"; done; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			apt-get install -y --no-install-recommends$$missing \
				|| { apt-get update && apt-get install -y --no-install-recommends$$missing; }; \
		else \
			echo "bench needs:$$missing (as root: apt-get install$$missing)" >&2; exit 1; \
		fi; \
	fi

bench: $(STAMP) $(BENCH_STAMP) bench-tools
	$(BENCH_VENV)/bin/python -m bench

bench-quick: $(STAMP) $(BENCH_STAMP) bench-tools
	$(BENCH_VENV)/bin/python -m bench --quick

## bench-lock: rewrite bench/requirements.txt from bench/requirements.in
bench-lock: $(STAMP)
	cd bench && CUSTOM_COMPILE_COMMAND="make bench-lock" ../$(BIN)/pip-compile --quiet --generate-hashes \
		--allow-unsafe --strip-extras --no-emit-find-links --output-file requirements.txt requirements.in
