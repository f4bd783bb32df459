# The two set-up commands:
#   make run    create .venv, install every backend, run the conformance suite
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
	$(BIN)/bce conformance --json reports/conformance.json

test: $(STAMP)
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) reports .pytest_cache .hypothesis
