# make demo: set up .venv (Python 3.12) and run the demo pipeline end to end, into an
# empty data/demo.
# make test: set up .venv and run the test suite (what CI runs; ruff and mypy included).
# make lint: ruff (lint and format) and mypy.
PYTHON ?= $(shell ./.ci/find-python)
VENV := .venv
BIN := $(VENV)/bin
DEMO_READINGS ?= 2000000

.PHONY: setup demo test bench lint clean

$(BIN)/.installed: pyproject.toml
	@test -n "$(PYTHON)" || (echo "no Python 3.12 found (see .ci/find-python)" >&2; exit 1)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,notebooks]'
	@touch $@

setup: $(BIN)/.installed

# Each demo starts from an empty data/demo (a second run would otherwise add to it).
demo: setup
	rm -rf data/demo
	$(BIN)/telepipe run pipeline=demo limit.readings=$(DEMO_READINGS) data_dir=data/demo

test: setup
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/python benchmarks/demo_throughput.py
	$(BIN)/python benchmarks/replay_throughput.py
	$(BIN)/python benchmarks/backpressure.py --readings 1000000 --sink-delay-ms 20 --policy block
	$(BIN)/python benchmarks/crash_recovery.py --kills 10

lint: setup
	$(BIN)/ruff check . && $(BIN)/ruff format --check . && $(BIN)/mypy

clean:
	rm -rf $(VENV) data .pytest_cache .hypothesis
