# The two commands a newcomer copies: `make quickstart` and `make test`. Both create the venv and
# install everything they need on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: quickstart test lint venv prometheus perf clean

$(STAMP): pyproject.toml constraints-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints-dev.txt -e '.[dev,highs,haproxy]'
	touch $(STAMP)

venv: $(STAMP)

prometheus:
	@scripts/install-prometheus.sh

quickstart: venv
	$(BIN)/benchmatch quickstart

lint: venv
	$(BIN)/ruff check .

test: venv prometheus lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

perf: venv prometheus
	$(BIN)/python tests/perf/run_all.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
