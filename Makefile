# Tunix RT: `make run` to try it, `make test` to check it. Both start from a fresh clone.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
# The PostgreSQL pass of the suite; pytest-django creates and drops test_<name> itself.
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/tunix_rt

# `make run` is a local development server: DEBUG on and a development-only secret key.
RUN_ENV := DEBUG=$${DEBUG:-1}

# TUNIX=1: `make run` also installs the training stack (requirements-tunix.txt) so local runs
# train for real. `make install-tunix` does it on its own.
TUNIX ?= 0

.PHONY: help install install-dev install-tunix run test lint format typecheck test-sqlite test-postgres test-fast clean

help:
	@echo "make run    - install, migrate, load the demo dataset, start web server + worker"
	@echo "make run TUNIX=1 - the same, with google-tunix installed: local runs train for real"
	@echo "make install-tunix - install the training stack (google-tunix, JAX for CPU; ~1.6 GB)"
	@echo "make test   - install dev tools, then format check, lint, types, tests (SQLite + PostgreSQL)"
	@echo "make test-fast - the inner loop: SQLite, no processes, browser or fuzzing; stops at the first failure"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: requirements.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements.txt
	@touch $@

$(VENV)/.installed-dev: requirements.txt requirements-dev.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements-dev.txt
	@touch $@ $(VENV)/.installed

$(VENV)/.installed-tunix: requirements.txt requirements-tunix.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements.txt -r requirements-tunix.txt
	@touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev
install-tunix: $(VENV)/.installed-tunix

run: install $(if $(filter 1,$(TUNIX)),install-tunix)
	$(RUN_ENV) $(BIN)/python manage.py migrate --noinput
	$(RUN_ENV) $(BIN)/python manage.py import_dataset runs/demo/tunix-demo-v1.jsonl --key tunix-demo-v1 --skip-existing
	$(RUN_ENV) $(BIN)/python manage.py ensure_admin
	@echo ""
	@echo "Tunix RT: http://$(HOST):$(PORT)/  (API: /api/tunix/runs, docs: /api/docs/, admin: /admin/)"
	@echo "Web server and worker start below; Ctrl-C stops both."
	@echo ""
	$(RUN_ENV) HOST=$(HOST) PORT=$(PORT) PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/honcho start

lint: install-dev
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/lint-imports

format: install-dev
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

typecheck: install-dev
	$(BIN)/mypy .

test-sqlite: install-dev
	DATABASE_URL= $(BIN)/pytest $(PYTEST_ARGS)

test-postgres: install-dev
	DATABASE_URL=$(TEST_DATABASE_URL) $(BIN)/pytest $(PYTEST_ARGS)

# The tiers it leaves out (markers in pyproject.toml, applied by tests/conftest.py) run in
# `make test`. PYTEST_ARGS narrows it further, e.g. PYTEST_ARGS=tests/test_csrf.py.
FAST_TIERS := not processes and not browser and not fuzz
test-fast: install-dev
	DATABASE_URL= $(BIN)/pytest -m "$(FAST_TIERS)" -x -q -p no:cacheprovider $(PYTEST_ARGS)

test: lint typecheck test-sqlite test-postgres

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache staticfiles
