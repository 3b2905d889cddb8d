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
