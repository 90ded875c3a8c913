# Two commands for a newcomer: `make run` and `make test`. Each sets itself up.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test lint venv venv-test bench soak clean ha-venv

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# `make run` installs the runtime only; the test tools (ruff, mypy, pytest, ...) come with `make test`.
venv: $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .

venv-test: $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'

run: venv
	$(BIN)/bms-gateway run $(ARGS)

lint: venv-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check gateway protocol mappings simulator
	$(BIN)/mypy

# The whole suite on two pytest-xdist workers (about 7 minutes on two cores; serial: about 14).
# `make test JOBS=0` runs it in one process.
JOBS ?= 2
test: lint
	$(BIN)/python -m pytest -W error -q -n $(JOBS) $(PYTEST_ARGS)

# Home Assistant core for the discovery-schema test (tests/fleet/test_home_assistant.py)
ha-venv:
	bash tests/fleet/ha-venv.sh

bench: venv
	$(BIN)/python -m pip install --quiet -e '.[fast,bench]'
	$(BIN)/python bench/report.py $(BENCH_ARGS)

soak: venv  # N minutes (default 30) with 15 packs, faults and load: slopes per hour, error counts
	$(BIN)/python bench/soak.py $(ARGS)

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
