# The two set-up commands:
#   make run    create .venv, install every backend, run the conformance suite, two
#               backends at a time (JAX_ENABLE_X64=1 so that JAX's float64 is checked too)
#   make test   create .venv, install every backend and the test tools, lint, run the tests
#   make lint   ruff (lint and format check) over the tree, mypy (strict) over bce_core
# Both keep JAX's compiled programs in .venv/cache/jax, so each run compiles a program once.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
export JAX_COMPILATION_CACHE_DIR ?= $(abspath $(VENV))/cache/jax
export JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS ?= 0
export JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES ?= 0

.PHONY: run test lint install clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --constraint constraints.txt --editable '.[all,test]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	mkdir -p reports
	$(BIN)/bce backends --devices
	JAX_ENABLE_X64=1 $(BIN)/bce conformance --jobs 2 --json reports/conformance.json \
		--html reports/conformance.html

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) reports .pytest_cache .hypothesis
