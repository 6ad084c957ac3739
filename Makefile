# The two commands a new user needs: `make demo` sets up and runs the demo, `make test` sets up and
# passes the tests (what CI runs). Each creates the virtual environment .venv when it is missing and
# installs into it again when pyproject.toml changes. `make check` is the quick tier alone.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# every target runs as in an activated .venv: its commands (trainer, moto_server, kubectl) first on PATH
export VIRTUAL_ENV := $(abspath $(VENV))
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: demo test check

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -e '.[test]'
	touch $@

demo: $(VENV)/.installed
	$(BIN)/trainer batch manifests/demo.yaml

# the quick tier: lint, format, types, import contracts, the tests that train nothing; make stops at
# the first that fails
check: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -m "not slow" -q

test: check
	$(BIN)/python -m pytest
