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

# The browser tests (tests/e2e) drive this Chromium, never a downloaded browser.
TUNIX_CHROMIUM ?= /usr/bin/chromium
export TUNIX_CHROMIUM
# Each pass of the suite leaves its JUnit report here, which `make test` sums up.
TEST_RESULTS ?= test-results
# What `make test` runs, in this order.
TEST_CHECKS ?= lint typecheck test-sqlite test-postgres

.PHONY: help install install-dev install-tunix install-ray run test lint format typecheck test-sqlite test-postgres test-fast chromium clean

help:
	@echo "make run    - install, migrate, load the demo dataset, start web server + worker"
	@echo "make run TUNIX=1 - the same, with google-tunix installed: local runs train for real"
	@echo "make install-tunix - install the training stack (google-tunix, JAX for CPU; ~1.6 GB)"
	@echo "make install-ray - the training stack and Ray's job client, for mode ray (~0.4 GB more)"
	@echo "make test   - install dev tools and Chromium, then format check, lint, types, tests (SQLite + PostgreSQL)"
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

$(VENV)/.installed-ray: requirements.txt requirements-tunix.txt requirements-ray.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements.txt -r requirements-tunix.txt -r requirements-ray.txt
	@touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev
install-tunix: $(VENV)/.installed-tunix
install-ray: $(VENV)/.installed-ray

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

# Tests that touch no database (marked database_independent: the trainer's, in its own
# process) and the Ray tests (marked ray: a Ray head takes seconds to start, and the database
# does not matter to them) run in the PostgreSQL pass only.
# A report left by an earlier run must not stand in for a pass that stopped before writing one.
test-sqlite: install-dev
	@rm -f $(TEST_RESULTS)/pytest-sqlite.xml
	DATABASE_URL= $(BIN)/pytest --junitxml=$(TEST_RESULTS)/pytest-sqlite.xml \
	  -m "not database_independent and not ray" $(PYTEST_ARGS)

test-postgres: install-dev
	@rm -f $(TEST_RESULTS)/pytest-postgres.xml
	DATABASE_URL=$(TEST_DATABASE_URL) $(BIN)/pytest --junitxml=$(TEST_RESULTS)/pytest-postgres.xml $(PYTEST_ARGS)

# The tiers it leaves out (markers in pyproject.toml, applied by tests/conftest.py) run in
# `make test`. PYTEST_ARGS narrows it further, e.g. PYTEST_ARGS=tests/test_csrf.py.
FAST_TIERS := not processes and not browser and not fuzz
test-fast: install-dev
	DATABASE_URL= $(BIN)/pytest -m "$(FAST_TIERS)" -x -q -p no:cacheprovider $(PYTEST_ARGS)

# Every check runs even when one before it failed, so a single run reports them all, both
# database passes included, and then fails if any did.
test: install-dev chromium
	@failed=0; report=""; \
	for check in $(TEST_CHECKS); do \
	  if $(MAKE) --no-print-directory $$check; then result=passed; else result=FAILED; failed=1; fi; \
	  case $$check in test-sqlite|test-postgres) \
	    result="$$result: $$($(BIN)/python tests/support/pass_summary.py $(TEST_RESULTS)/pytest-$${check#test-}.xml)";; \
	  esac; \
	  printf -v line '  %-14s %s\n' "$$check" "$$result"; report+="$$line"; \
	done; \
	printf '\nmake test:\n%s' "$$report"; \
	exit $$failed

# Installs Debian's chromium when it can (as root, with apt-get); otherwise stops at once with
# the command to run, instead of after a full pass whose browser tests all fail.
chromium:
	@if ! command -v "$(TUNIX_CHROMIUM)" >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "Installing Debian's chromium for the browser tests (tests/e2e)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  fi; \
	  if ! command -v "$(TUNIX_CHROMIUM)" >/dev/null 2>&1; then \
	    echo "make test: the browser tests (tests/e2e) need Chromium at $(TUNIX_CHROMIUM)." >&2; \
	    if command -v apt-get >/dev/null 2>&1; then \
	      echo "Install Debian's chromium (it needs root), then run make test again:" >&2; \
	      echo "    sudo apt-get install -y chromium" >&2; \
	      echo "Or point it at another Chromium: make test TUNIX_CHROMIUM=/path/to/chromium" >&2; \
	    else \
	      echo "Install Chromium, then: make test TUNIX_CHROMIUM=/path/to/chromium" >&2; \
	    fi; \
	    exit 1; \
	  fi; \
	fi

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache staticfiles
