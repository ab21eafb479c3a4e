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

.PHONY: help run serve chat webchat teams-package test lint format bench clean

help:
	@echo "make run    start the bot on http://127.0.0.1:3978/api/messages (settings: .env, see .env.example)"
	@echo "make chat   the bot plus a local Direct Line endpoint: chat with it in your browser (Web Chat)"
	@echo "make serve  the production server: gunicorn, WEB_CONCURRENCY workers (default 2) on HOST:PORT"
	@echo "make teams-package  the Teams app to upload: manifest with MicrosoftAppId (or APP_ID=...) and icons, zipped"
	@echo "make test   create .venv, install everything, run ruff and the whole test suite"
	@echo "make bench  measure this bot against its baselines, every backend (QUICK=1: smoke run); bench/RESULTS.md"
	@echo "make clean  remove .venv, node_modules, caches and test artefacts (keeps .state/, your bot's data)"

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

# checkov checks deploymentTemplates/ (tests/deploy/test_deploy_templates.py). Its pins (packaging<24) clash with pytest's
# (packaging>=24), so it gets a virtual environment of its own inside .venv.
CHECKOV_VENV := $(VENV)/checkov
$(CHECKOV_VENV)/.installed: $(VENV)/.python-$(WANT) requirements-checkov.txt
	rm -rf $(CHECKOV_VENV)
	$(PY) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-checkov.txt
	touch $@

# Azurite and the Cosmos DB peer the tests start (Node 20+); never scripts, never a download at run time.
node_modules/.installed: package.json package-lock.json
	@command -v npm >/dev/null 2>&1 || { echo "npm (Node 20) is needed for the Azure storage tests" >&2; exit 1; }
	npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
	touch $@

run: $(VENV)/.runtime
	$(PY) app.py

# Web Chat's prebuilt bundle, served by `make chat` (never from a CDN). Only dist/webchat.js is extracted from
# the npm tarball, whose sha256 is checked first; `npm install` of the package would be ~500 MB and run scripts.
WEBCHAT_VERSION := 4.18.1
WEBCHAT_SHA256 := 64247186a977768d3536e6eef61cf1d6077a3b8e9c491cc3292422f6bf8d62c6
WEBCHAT_DIR := .cache/webchat-$(WEBCHAT_VERSION)
WEBCHAT_JS := $(WEBCHAT_DIR)/webchat.js

$(WEBCHAT_JS): | $(VENV)/.python-$(WANT)
	@command -v npm >/dev/null 2>&1 || { echo "npm is needed once to fetch Web Chat $(WEBCHAT_VERSION)" >&2; exit 1; }
	rm -rf $(WEBCHAT_DIR).tmp && mkdir -p $(WEBCHAT_DIR).tmp
	cd $(WEBCHAT_DIR).tmp && npm pack botframework-webchat@$(WEBCHAT_VERSION) --silent --no-audit --no-fund >/dev/null
	@actual=$$($(PY) -c 'import hashlib, sys; print(hashlib.sha256(open(sys.argv[1], "rb").read()).hexdigest())' \
		$(WEBCHAT_DIR).tmp/botframework-webchat-$(WEBCHAT_VERSION).tgz); \
	if [ "$$actual" != "$(WEBCHAT_SHA256)" ]; then \
		echo "botframework-webchat-$(WEBCHAT_VERSION).tgz has sha256 $$actual, expected $(WEBCHAT_SHA256)" >&2; \
		rm -rf $(WEBCHAT_DIR).tmp; exit 1; fi
	tar -xzf $(WEBCHAT_DIR).tmp/botframework-webchat-$(WEBCHAT_VERSION).tgz -C $(WEBCHAT_DIR).tmp package/dist/webchat.js
	mkdir -p $(WEBCHAT_DIR)
	mv $(WEBCHAT_DIR).tmp/package/dist/webchat.js $@
	rm -rf $(WEBCHAT_DIR).tmp

webchat: $(WEBCHAT_JS)

chat: $(VENV)/.runtime $(WEBCHAT_JS)
	$(PY) -m chat

serve: $(VENV)/.runtime
	$(VENV)/bin/gunicorn

# The Teams app package (deploymentTemplates/teams/): APP_ID=..., else MicrosoftAppId from the environment or .env.
teams-package: $(VENV)/.runtime
	$(PY) deploymentTemplates/teams/package.py $(if $(APP_ID),--app-id $(APP_ID))

lint: $(VENV)/.dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

test: lint node_modules/.installed $(CHECKOV_VENV)/.installed $(WEBCHAT_JS)
	$(PY) -m pytest

format: $(VENV)/.dev
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: $(VENV)/.dev node_modules/.installed
	$(PY) -m bench $(if $(QUICK),--quick)

clean:
	rm -rf $(VENV) .venv-3.* node_modules .pytest_cache .ruff_cache .cache artifacts
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
