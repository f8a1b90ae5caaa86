# ntkcore — set up, run the app, run the tests.
#
#   make app    create .venv if needed, install requirements.txt, run the Streamlit app
#   make test   same setup, then the whole pytest suite and `ruff check .`
#
# Setup is idempotent: it re-runs only when requirements.txt or pyproject.toml change
# (a stamp file in .venv is keyed on their content hash). requirements-crosscheck.txt holds
# third-party cross-checks the tests use, installed without their (torchvision) dependencies.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
PORT ?= 8501
PYTEST_ARGS ?=

BIN := $(VENV)/bin
REQ_HASH := $(shell cat requirements.txt requirements-crosscheck.txt pyproject.toml | sha256sum | cut -c1-16)
STAMP := $(VENV)/.ntkcore-setup-$(REQ_HASH)

.PHONY: help setup app test lint clean

help:  ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else \
		"ntkcore needs Python >= 3.11; found " + sys.version.split()[0] + \
		" (set PYTHON=/path/to/python3.11)")'
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python
	$(BIN)/python -m pip install -r requirements.txt
	$(BIN)/python -m pip install --no-deps -r requirements-crosscheck.txt
	@rm -f $(VENV)/.ntkcore-setup-*
	@touch $@

setup: $(STAMP)  ## Create .venv and install requirements.txt (no-op when up to date)

app: $(STAMP)  ## Set up, then run the app on http://localhost:8501 (override: PORT=...)
	@# Train the Adapt page's source model into the checkpoint cache first (a no-op once
	@# cached), so the first page view does not wait for training.
	$(BIN)/python -m ntkcore.zoo build --only sinusoids-mlp
	$(BIN)/python app/launch.py --server.port $(PORT)

test: $(STAMP)  ## Set up, then run the whole test suite and ruff
	$(BIN)/python -m pytest $(PYTEST_ARGS)
	$(BIN)/ruff check .

lint: $(STAMP)  ## ruff check only
	$(BIN)/ruff check .

clean:  ## Remove caches (keeps .venv)
	rm -rf .pytest_cache .ruff_cache
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -print0 | xargs -0 rm -rf
