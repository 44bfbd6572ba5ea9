# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: demo test test-fast lint format clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Reinstall when the dependency list changes. torch is pinned so the local CPU wheel satisfies it.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@

demo: $(STAMP)  ## the main job on the embedded defaults (digits)
	$(BIN)/kcm run --out runs/demo --set large.price.per_call=0.002

# test processes (pytest-xdist): one more than the cores (the end-to-end tests wait on servers
# and child processes: 10.1 -> 9.1 min on 2 cores); JOBS=0 runs the tests in one process
JOBS ?= $(shell $(PYTHON) -c "import os; print((os.cpu_count() or 1) + 1)")

test: $(STAMP)  ## the whole test suite
	$(BIN)/python -m pytest -n $(JOBS) --dist loadfile --durations=15 $(PYTEST_ARGS)

test-fast: $(STAMP)  ## unit and contract tests only
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check kcm kcm_app flows tests benchmarks

format: $(STAMP)
	$(BIN)/ruff format kcm kcm_app flows tests

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
