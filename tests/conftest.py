"""Shared fixtures: one real moto server per test session, reset between the tests that use it.

Tests reach AWS only through boto3 over HTTP to that server on 127.0.0.1. This machine's network rule
is loopback only, so the public-IP services are switched off here; tests that exercise them start
their own loopback HTTP server.
"""

from __future__ import annotations

import collections
import os
import tempfile
from pathlib import Path

import dask.config
import pytest

_STATE_DIR = Path(tempfile.mkdtemp(prefix="coiled-jupyter-tests-"))
_CONFIG_DIR = _STATE_DIR / "dask-config"
_CONFIG_DIR.mkdir()

# For this process (dask read its environment at import) and for kernels the tests start.
TEST_CONFIG = {
    "coiled-jupyter.sandbox.state-dir": str(_STATE_DIR),
    "coiled-jupyter.public-ip.services": [],
}
dask.config.set(TEST_CONFIG)
os.environ["DASK_COILED_JUPYTER__SANDBOX__STATE_DIR"] = str(_STATE_DIR)
os.environ["DASK_COILED_JUPYTER__PUBLIC_IP__SERVICES"] = "[]"
os.environ["DASK_CONFIG"] = str(_CONFIG_DIR)
for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
    os.environ.pop(name, None)


@pytest.fixture(scope="session")
def sandbox_server():
    """The shared sandbox (moto) server, started once for the whole test session."""
    from coiled_jupyter.provision import sandbox

    server = sandbox.ensure()
    yield server
    sandbox.stop()


@pytest.fixture
def sandbox(sandbox_server):
    """A clean sandbox for one test: every group and parameter from earlier tests is gone."""
    from coiled_jupyter.provision import sandbox as module

    module.reset()
    yield sandbox_server


@pytest.fixture(autouse=True)
def _fresh_session():
    """Every test starts without a notebook-session layer."""
    yield
    from coiled_jupyter.settings import reset_session

    reset_session()


@pytest.fixture
def api_calls(sandbox):
    """Count EC2 and SSM API calls (one per operation, not per retry) with botocore events."""
    from coiled_jupyter.provision import aws
    from coiled_jupyter.provision.core import target

    counts: collections.Counter = collections.Counter()

    def count(model, **_):
        counts[f"{model.service_model.service_name}:{model.name}"] += 1

    connection = target().connection()
    clients = [aws.client(service, connection) for service in ("ec2", "ssm")]
    for client in clients:
        client.meta.events.register("before-call", count)
    yield counts
    for client in clients:
        client.meta.events.unregister("before-call", count)
