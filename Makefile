# The README's commands. Each one sets up its own virtualenv first, so they work on a fresh clone with
# only Python 3.11+ available.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test bench sandbox-stop clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	touch $@

## Apply Coiled's documented two-CIDR example to a sandbox cluster and print the resulting rule table.
demo: $(VENV)/.installed
	$(PY) -m coiled_jupyter demo

## Lint, then run every test (unit, moto server, notebooks in real kernels).
test: $(VENV)/.installed
	$(PY) -m ruff check coiled_jupyter tests benchmarks
	$(PY) -m ruff format --check coiled_jupyter tests benchmarks
	$(PY) -m pytest -q

## Benchmarks: apply latency and API calls, cold start of %load_ext, compaction; needs the bench extra.
bench: $(VENV)/.installed
	$(PY) -m pip install --quiet -e ".[test,bench]"
	$(PY) benchmarks/bench_apply.py
	$(PY) benchmarks/bench_load_ext.py
	$(PY) benchmarks/bench_compaction.py

## Stop the shared sandbox server, if one runs.
sandbox-stop: $(VENV)/.installed
	$(PY) -m coiled_jupyter.provision.sandbox stop

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
