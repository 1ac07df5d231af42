# The README's two commands: `make run` and `make test`. Both set up .venv themselves.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
ARGS   ?=

.PHONY: run stop test lint typecheck unit bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[test]'
	touch $@ $(VENV)/.installed

run: $(VENV)/.installed
	$(BIN)/dromos serve --state-dir .dromos $(ARGS)

# Tasks outlive `make run` (Ctrl-C stops Dromos, not its tasks): this stops them, through
# Dromos's API when it is up (apps scaled to 0), else by their executors' records in .dromos.
stop: $(VENV)/.installed
	$(BIN)/dromos stop-all --state-dir .dromos

lint: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/lint-imports

typecheck: $(VENV)/.installed-test
	$(BIN)/mypy

test: $(VENV)/.installed-test lint typecheck
	$(BIN)/pytest -q

bench: $(VENV)/.installed-test
	$(BIN)/python bench/placement.py

# Refuses while tasks of .dromos still run (deleting their records would orphan them):
# `make stop` first, or `make clean FORCE=1`. The check needs only python3.
clean:
	@$(PYTHON) -m scheduler.stop --check .dromos || [ -n "$(FORCE)" ] || \
		{ echo "make clean: refusing; run 'make stop' first, or 'make clean FORCE=1'" >&2; exit 1; }
	rm -rf $(VENV) .dromos .pytest_cache .mypy_cache .ruff_cache
