# The two set-up commands:
#   make run    create .venv, install every backend, run the conformance suite
#               (JAX_ENABLE_X64=1 so that JAX's float64 is checked too)
#   make test   create .venv, install every backend and the test tools, run the tests
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: run test install clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --constraint constraints.txt --editable '.[all,test]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	mkdir -p reports
	$(BIN)/bce backends
	JAX_ENABLE_X64=1 $(BIN)/bce conformance --json reports/conformance.json \
		--html reports/conformance.html

test: $(STAMP)
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) reports .pytest_cache .hypothesis
