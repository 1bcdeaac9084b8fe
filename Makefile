# The commands of this project; each creates or reuses the virtual environment it needs.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test faults lint typecheck offline-images clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

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

## faults: only the fault suite (load, kills, reloads, a full disk, hostile input), with its figures
faults: $(STAMP)
	$(BIN)/pytest -m faults

## offline-images: base images and a wheelhouse built from Debian packages and PyPI, no registry
offline-images: $(STAMP)
	scripts/offline-images.sh

clean:
	rm -rf var .pytest_cache .mypy_cache .ruff_cache
