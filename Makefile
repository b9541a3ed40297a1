# The two set-up commands of the README. Each creates or updates its own virtualenv.
#   make run   -> lanewarden serve on embedded defaults (SQLite board, console)
#   make test  -> the whole test suite
SHELL := /bin/bash
PYTHON ?= $(shell for p in python3.13 python3.12 python3.11 python3; do \
	command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null \
	&& { echo $$p; break; }; done)
RUN_VENV := .venv
TEST_VENV := .venv-test

.PHONY: run test lint bench

run: $(RUN_VENV)/.installed
	$(RUN_VENV)/bin/lanewarden serve $(ARGS)

test: $(TEST_VENV)/.installed
	$(TEST_VENV)/bin/python -m pytest $(PYTEST_ARGS)

lint: $(TEST_VENV)/.installed
	$(TEST_VENV)/bin/ruff check core scheduler bot tests bench
	$(TEST_VENV)/bin/ruff format --check core scheduler bot tests bench

bench: $(TEST_VENV)/.installed
	$(TEST_VENV)/bin/python -m bench all

$(RUN_VENV)/.installed: pyproject.toml
	@test -n "$(PYTHON)" || { echo "Lanewarden needs Python 3.11 or newer on PATH" >&2; exit 1; }
	$(PYTHON) -m venv $(RUN_VENV)
	$(RUN_VENV)/bin/python -m pip install -q --upgrade pip
	$(RUN_VENV)/bin/python -m pip install -q -e .
	touch $@

$(TEST_VENV)/.installed: pyproject.toml
	@test -n "$(PYTHON)" || { echo "Lanewarden needs Python 3.11 or newer on PATH" >&2; exit 1; }
	$(PYTHON) -m venv $(TEST_VENV)
	$(TEST_VENV)/bin/python -m pip install -q --upgrade pip
	$(TEST_VENV)/bin/python -m pip install -q -e '.[dev]'
	touch $@
