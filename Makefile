# Two entry points (README Quickstart): `make run` starts the app, `make test` runs the tests.
# Both create .venv with Python 3.11 and install the pinned requirements when needed.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
TEST_ENV := HF_HUB_OFFLINE=1 GRADIO_ANALYTICS_ENABLED=False MPLBACKEND=Agg

.PHONY: run test test-fast lint clean-venv

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.runtime-installed: requirements.txt pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.dev-installed: requirements.txt requirements-dev.txt pyproject.toml $(VENV)/.runtime-installed
	$(BIN)/pip install --quiet -r requirements.txt -r requirements-dev.txt
	touch $@

run: $(VENV)/.runtime-installed
	GRADIO_ANALYTICS_ENABLED=False $(BIN)/python app.py

# Lint first: a ruff finding fails `make test` as a failing test does.
test: lint
	-sh scripts/ensure_chromium.sh
	$(TEST_ENV) $(BIN)/python -m pytest

# The quick loop while working: neither the slow tests nor the browser ones.
test-fast: $(VENV)/.dev-installed
	$(TEST_ENV) $(BIN)/python -m pytest -m "not slow and not browser"

lint: $(VENV)/.dev-installed
	$(BIN)/ruff check .

clean-venv:
	rm -rf $(VENV)
