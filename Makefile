# The README's commands. Each one sets up its own virtualenv first, so they work on a fresh clone with
# only Python 3.11+ and node (for the JupyterLab extension) available.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(abspath $(VENV))/bin
LAB_PORT ?= 8888
LAB_SOURCES := $(wildcard labextension/src/*.ts labextension/style/*) labextension/package.json \
	labextension/yarn.lock labextension/tsconfig.json
# The benchmarks get a virtualenv of their own: dask-cloudprovider's aiobotocore pins botocore below
# the boto3 the tests use, so its versions are pinned there (benchmarks/constraints.txt) and the test
# environment keeps the newest boto3.
BENCH_VENV ?= .venv-bench
BENCH_PY := $(BENCH_VENV)/bin/python

.PHONY: demo lab labextension test bench sandbox-stop clean

# The editable install also builds the lab extension once (the build hook runs jlpm, which
# jupyter-builder ships); `labextension` below rebuilds it whenever its sources change.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	touch $@

## Build the JupyterLab extension from labextension/ (npm registry only) and link it into the venv.
labextension: $(VENV)/.labextension
$(VENV)/.labextension: $(VENV)/.installed $(LAB_SOURCES)
	cd labextension && PATH="$(BIN):$$PATH" jlpm install --immutable
	cd labextension && PATH="$(BIN):$$PATH" jlpm build
	$(VENV)/bin/jupyter-builder develop --overwrite .
	touch $@

## Apply Coiled's documented two-CIDR example to a sandbox cluster and print the resulting rule table.
demo: $(VENV)/.installed
	$(PY) -m coiled_jupyter demo

## JupyterLab on 127.0.0.1 with the sidebar, the renderer and the sandbox, to try by hand.
lab: $(VENV)/.labextension
	$(VENV)/bin/jupyter lab --ip=127.0.0.1 --port=$(LAB_PORT) --no-browser $(if $(filter 0,$(shell id -u)),--allow-root)

## Lint, then run every test (unit, moto server, notebooks in real kernels, REST, browser).
test: $(VENV)/.labextension
	$(PY) -m ruff check coiled_jupyter tests benchmarks
	$(PY) -m ruff format --check coiled_jupyter tests benchmarks
	$(PY) -m pytest -q

$(BENCH_VENV)/.installed: pyproject.toml benchmarks/constraints.txt
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_PY) -m pip install --quiet --upgrade pip
	$(BENCH_PY) -m pip install --quiet -e ".[bench]" -c benchmarks/constraints.txt
	touch $@

## Benchmarks: apply latency and API calls beside dask-cloudprovider, cold first apply, cold start of
## %load_ext, compaction, the rehearsal (root); in their own virtualenv with the bench extra (about a minute to set up).
bench: $(BENCH_VENV)/.installed
	$(BENCH_PY) benchmarks/bench_apply.py
	$(BENCH_PY) benchmarks/bench_load_ext.py
	$(BENCH_PY) benchmarks/bench_compaction.py
	$(BENCH_PY) benchmarks/bench_sandbox_stop.py
	$(BENCH_PY) benchmarks/bench_rehearsal.py

## Stop the shared sandbox server, if one runs.
sandbox-stop: $(VENV)/.installed
	$(PY) -m coiled_jupyter.provision.sandbox stop

clean:
	rm -rf $(VENV) $(BENCH_VENV) .pytest_cache .hypothesis labextension/node_modules labextension/lib \
		labextension/tsconfig.tsbuildinfo coiled_jupyter/labextension test-artifacts
