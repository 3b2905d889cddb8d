"""A real Jupyter Server (pytest-jupyter) with the coiled_jupyter server extension enabled.

pytest-jupyter's fixtures are imported here rather than registered as a plugin for the whole suite:
its autouse fixtures (an event loop per test, a server clean-up) then run only around these tests.
"""

from __future__ import annotations

import pytest
from pytest_jupyter.jupyter_server import *  # noqa: F403


@pytest.fixture
def jp_server_config():
    return {"ServerApp": {"jpserver_extensions": {"coiled_jupyter": True}}}


@pytest.fixture(autouse=True)
def _session_detail_restored():
    """The extension names the session after the server; later tests in this process are kernels."""
    from coiled_jupyter.settings import SESSION

    detail = SESSION.detail
    yield
    SESSION.detail = detail
