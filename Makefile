# The README's commands. Each one sets up its own virtualenv first, so they work on a fresh clone with
# only Python 3.11+ available.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The benchmarks get a virtualenv of their own: dask-cloudprovider's aiobotocore pins botocore below
# the boto3 the tests use, so its versions are pinned there (benchmarks/constraints.txt) and the test
# environment keeps the newest boto3.
BENCH_VENV ?= .venv-bench
BENCH_PY := $(BENCH_VENV)/bin/python

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

$(BENCH_VENV)/.installed: pyproject.toml benchmarks/constraints.txt
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_PY) -m pip install --quiet --upgrade pip
	$(BENCH_PY) -m pip install --quiet -e ".[bench]" -c benchmarks/constraints.txt
	touch $@

## Benchmarks: apply latency and API calls beside dask-cloudprovider, cold first apply, cold start of
## %load_ext; in their own virtualenv with the bench extra (about a minute to set up).
bench: $(BENCH_VENV)/.installed
	$(BENCH_PY) benchmarks/bench_apply.py
	$(BENCH_PY) benchmarks/bench_load_ext.py

## Stop the shared sandbox server, if one runs.
sandbox-stop: $(VENV)/.installed
	$(PY) -m coiled_jupyter.provision.sandbox stop

clean:
	rm -rf $(VENV) $(BENCH_VENV) .pytest_cache .hypothesis
