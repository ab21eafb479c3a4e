# The state bot. `make run` talks to the Emulator; `make test` proves it. Both set up what they need.
.DEFAULT_GOAL := help
SHELL := /bin/bash

# `make test PYTHON_VERSION=3.13` builds and tests a second environment (.venv-3.13); 3.12 is the default.
PYTHON_VERSION ?= 3.12
WANT := $(PYTHON_VERSION)
VENV := $(if $(filter 3.12,$(WANT)),.venv,.venv-$(WANT))
PY := $(VENV)/bin/python

# Python $(WANT), found in this order: PYTHON=... on the command line, a python$(WANT) that runs, pyenv's $(WANT).x.
PYTHON ?= $(shell \
	if python$(WANT) -c '' >/dev/null 2>&1; then echo python$(WANT); \
	elif command -v pyenv >/dev/null 2>&1; then ls -d "$$(pyenv root)"/versions/$(WANT).*/bin/python$(WANT) 2>/dev/null | sort -V | tail -n 1; \
	fi)

.PHONY: help run serve test lint format bench clean

help:
	@echo "make run    start the bot on http://127.0.0.1:3978/api/messages (settings: .env, see .env.example)"
	@echo "make serve  the production server: gunicorn, WEB_CONCURRENCY workers (default 2) on HOST:PORT"
	@echo "make test   create .venv, install everything, run ruff and the whole test suite"
	@echo "make bench  measure turns per second on each storage backend"
	@echo "make clean  remove .venv, node_modules and caches (keeps .state/, your bot's data)"

# The virtual environment, rebuilt when it is missing or was made with another Python.
$(VENV)/.python-$(WANT):
	@if [ -z "$(PYTHON)" ]; then \
		echo "Python $(WANT) was not found: install it (python.org, your package manager or 'pyenv install $(WANT)')," >&2; \
		echo "or point to it: make $(MAKECMDGOALS) PYTHON=/path/to/python$(WANT)" >&2; exit 1; fi
	@"$(PYTHON)" -c 'import sys; sys.exit(f"{sys.version_info[0]}.{sys.version_info[1]}" != "$(WANT)")' || \
		{ echo "$(PYTHON) is not Python $(WANT)" >&2; exit 1; }
	@echo "creating $(VENV) with $$("$(PYTHON)" --version)"
	rm -rf $(VENV)
	"$(PYTHON)" -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	touch $@

$(VENV)/.runtime: $(VENV)/.python-$(WANT) requirements.txt
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

$(VENV)/.dev: $(VENV)/.runtime requirements-dev.txt
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

# Azurite and the Cosmos DB peer the tests start (Node 20+); never scripts, never a download at run time.
node_modules/.installed: package.json package-lock.json
	@command -v npm >/dev/null 2>&1 || { echo "npm (Node 20) is needed for the Azure storage tests" >&2; exit 1; }
	npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
	touch $@

run: $(VENV)/.runtime
	$(PY) app.py

serve: $(VENV)/.runtime
	$(VENV)/bin/gunicorn

lint: $(VENV)/.dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: lint node_modules/.installed
	$(PY) -m pytest

format: $(VENV)/.dev
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: $(VENV)/.dev node_modules/.installed
	$(PY) -m bench

clean:
	rm -rf $(VENV) .venv-3.* node_modules .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
