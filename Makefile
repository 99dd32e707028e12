# The README's two commands are `make demo` and `make test`; .ci/run calls `make test-ci`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test test-ci test-all lint typecheck

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# The digits demo sweep, end to end on CPU: pretraining, ECT tuning, FD-digits records, fits, figures.
demo: install
	$(BIN)/harness run sweeps/digits.toml --cluster local

# The default test run, the loop before every commit (lint, type check, then the CPU-only tests
# that take seconds each).
test: install
	$(BIN)/ruff check harness analysis tests scripts
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -m "not slow and not slurm and not ci and not gpu"

# What CI runs: everything `make test` runs, plus the live-SLURM tests (they start a throw-away
# cluster, or skip with a reason unless SLURM_CI_REQUIRED=1) and the ci-marked tests (several
# processes, fault injection, statistical replication).
test-ci: install
	$(BIN)/ruff check harness analysis tests scripts
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -m "not slow and not gpu"

# Everything, slow tests included.
test-all: install
	$(BIN)/python -m pytest -m "not gpu"

lint: install
	$(BIN)/ruff check harness analysis tests scripts
	$(BIN)/lint-imports

# Type-check harness/, analysis/ and scripts/ (settings in pyproject.toml [tool.mypy]).
typecheck: install
	$(BIN)/mypy
