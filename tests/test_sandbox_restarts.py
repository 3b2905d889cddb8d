"""The sandbox never loses state silently and never leaves a server unrecorded.

Each test uses a state folder of its own, so the session's shared server is never touched; each
stops what it started.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import dask.config
import psutil
import pytest

from coiled_jupyter import session
from coiled_jupyter.provision import sandbox as sandbox_module

PACKAGE_ROOT = str(Path(session.__file__).parents[1])


@pytest.fixture
def own_state_dir(tmp_path):
    folder = tmp_path / "state"
    folder.mkdir()
    with dask.config.set({"coiled-jupyter.sandbox.state-dir": str(folder)}):
        try:
            yield folder
        finally:
            sandbox_module.stop()


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def wait_gone(pid: int, seconds: float = 15) -> bool:
    deadline = time.monotonic() + seconds
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not alive(pid)


def test_a_killed_server_is_replaced_and_the_restart_announced(own_state_dir):
    first = sandbox_module.ensure()
    session.apply("restarted")
    assert sandbox_module.restart_warning() is None
    os.killpg(first.pid, signal.SIGKILL)
    assert wait_gone(first.pid)
    second = sandbox_module.ensure()
    assert second.pid != first.pid
    warning = sandbox_module.restart_warning()
    assert warning and "restarted" in warning and "gone" in warning
    table = session.describe("restarted")
    assert warning in table.warnings
    assert warning in session.plan("restarted").warnings
    assert any("gone" in w for w in session.apply("restarted").table.warnings)
    assert sandbox_module.acknowledge_restart()
    assert sandbox_module.restart_warning() is None
    assert not any("restarted at" in w for w in session.describe("restarted").warnings)


def test_a_hung_server_is_stopped_when_replaced_not_orphaned(own_state_dir):
    first = sandbox_module.ensure()
    os.killpg(first.pid, signal.SIGSTOP)
    try:
        second = sandbox_module.ensure()
        assert second.pid != first.pid
        assert wait_gone(first.pid), "the hung server was left running"
        assert sandbox_module.restart_warning()
    finally:
        if alive(first.pid):
            os.killpg(first.pid, signal.SIGKILL)


def test_stop_stops_a_hung_server(own_state_dir):
    server = sandbox_module.ensure()
    os.killpg(server.pid, signal.SIGSTOP)
    try:
        assert sandbox_module.stop()
        assert wait_gone(server.pid)
    finally:
        if alive(server.pid):
            os.killpg(server.pid, signal.SIGKILL)


def test_a_deliberate_stop_is_not_announced_as_a_restart(own_state_dir):
    sandbox_module.ensure()
    sandbox_module.stop()
    sandbox_module.ensure()
    assert sandbox_module.restart_warning() is None


def test_a_kernel_killed_during_start_leaves_a_recorded_server(own_state_dir):
    """The server is recorded before it is waited for: killing the starter at that moment leaves a
    record that ``stop`` acts on."""
    code = textwrap.dedent("""\
        from coiled_jupyter.provision import sandbox
        sandbox._answers = lambda server: False  # never ready: the kernel dies while waiting
        sandbox._START_TIMEOUT = 120
        sandbox.ensure()
        """)
    env = {
        **os.environ,
        "PYTHONPATH": PACKAGE_ROOT,
        "DASK_COILED_JUPYTER__SANDBOX__STATE_DIR": str(own_state_dir),
    }
    starter = subprocess.Popen([sys.executable, "-c", code], env=env)
    state_file = own_state_dir / sandbox_module.STATE_FILE
    try:
        deadline = time.monotonic() + 60
        while not _recorded_server_alive(state_file):  # the starter is now waiting for it
            assert starter.poll() is None and time.monotonic() < deadline, "no record was written"
            time.sleep(0.05)
    finally:
        starter.kill()
        starter.wait()
    try:
        pid = json.loads(state_file.read_text())["pid"]
        assert alive(pid)
        assert sandbox_module.stop()
        assert wait_gone(pid)
    finally:
        for leftover in _moto_servers_of(own_state_dir):  # only if the test failed
            leftover.kill()


def _recorded_server_alive(state_file: Path) -> bool:
    try:
        return alive(json.loads(state_file.read_text())["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return False  # not written yet, or half written


def _moto_servers_of(state_dir: Path) -> list[psutil.Process]:
    """moto servers started for ``state_dir`` (they inherit its environment variable)."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        try:
            if "moto.server" not in " ".join(process.info["cmdline"] or []):
                continue
            if process.environ().get("DASK_COILED_JUPYTER__SANDBOX__STATE_DIR") == str(state_dir):
                found.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found
