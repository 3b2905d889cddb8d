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


def test_a_paused_server_is_never_replaced(own_state_dir):
    """A server that does not answer within the liveness wait may only be busy: replacing it would
    lose its groups. ensure() refuses, in one sentence, and leaves it and its record alone."""
    from coiled_jupyter.errors import CloudError

    first = sandbox_module.ensure()
    session.apply("kept")
    os.killpg(first.pid, signal.SIGSTOP)
    try:
        with pytest.raises(CloudError) as raised:
            sandbox_module.ensure()
        assert raised.value.code == "SandboxNotAnswering"
        assert f"pid {first.pid}" in str(raised.value) and "sandbox stop" in str(raised.value)
        assert sandbox_module.recorded() == first
        assert alive(first.pid)
    finally:
        os.killpg(first.pid, signal.SIGCONT)
    assert sandbox_module.ensure() == first
    assert sandbox_module.restart_warning() is None
    assert session.describe("kept").exists  # its groups are still there


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
        while not state_file.exists():
            assert starter.poll() is None and time.monotonic() < deadline, "no record was written"
            time.sleep(0.05)
        time.sleep(0.5)
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


# --------------------------------------------------------------------------------------------------
# A busy server is not a stopped one


def test_a_paused_server_is_a_refusal_never_an_empty_account_store(own_state_dir):
    """Team defaults in a sandbox whose server is paused (SIGSTOP) for longer than the liveness
    wait: what needs them is refused, and settings work keeps them as last known; neither falls
    back to the world-open built-in default."""
    from coiled_jupyter import set_backend_options
    from coiled_jupyter.errors import AccountStoreUnreadable
    from coiled_jupyter.settings import Layer

    server = sandbox_module.ensure()
    set_backend_options(ingress=[{"ports": [8786], "cidr": "10.1.0.0/16"}])
    os.killpg(server.pid, signal.SIGSTOP)
    try:
        with pytest.raises(AccountStoreUnreadable) as raised:
            session.plan("team")
        assert raised.value.code == "SandboxNotAnswering"
        assert "did not answer" in str(raised.value)
        view = session.show("team", reach=False)
        assert view.settings.ingress.layer == Layer.ACCOUNT
        assert {r.source for r in view.settings.rules} == {"10.1.0.0/16"}
        assert sandbox_module.recorded() == server
    finally:
        os.killpg(server.pid, signal.SIGCONT)
    assert sandbox_module.running() == server  # not replaced: its groups and defaults are kept
    planned = session.plan("team")
    assert {r.source for r in planned.add} >= {"10.1.0.0/16"}
    assert "0.0.0.0/0" not in {r.source for r in planned.add}


# --------------------------------------------------------------------------------------------------
# Stop returns at once when the server is gone or a zombie

# A kernel: starts the sandbox (its child) and lives on until its stdin closes.
_KERNEL = textwrap.dedent("""\
    import sys
    from coiled_jupyter.provision import sandbox
    print(sandbox.ensure().pid, flush=True)
    sys.stdin.read()
    """)
# Seconds the stop command may take, its start-up included; before the fix it waited 15 s for a
# server that had exited but that the kernel (its parent) had not reaped.
STOP_TIMEOUT = 12


@pytest.mark.parametrize(
    "case", ["the kernel lives", "the server was killed (a zombie)", "the kernel was killed"]
)
def test_stop_returns_at_once_when_the_server_exits_into_a_zombie_or_is_gone(own_state_dir, case):
    env = {
        **os.environ,
        "PYTHONPATH": PACKAGE_ROOT,
        "DASK_COILED_JUPYTER__SANDBOX__STATE_DIR": str(own_state_dir),
    }
    kernel = subprocess.Popen(
        [sys.executable, "-c", _KERNEL], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    pid = None
    try:
        pid = int(kernel.stdout.readline())
        if case == "the server was killed (a zombie)":
            os.killpg(pid, signal.SIGKILL)
            assert wait_gone(pid)  # a zombie: its parent, the kernel, does not reap it
        elif case == "the kernel was killed":
            kernel.kill()
            kernel.wait()
        stopped = subprocess.run(
            [sys.executable, "-m", "coiled_jupyter.provision.sandbox", "stop"],
            env=env,
            capture_output=True,
            text=True,
            timeout=STOP_TIMEOUT,
        )
        assert stopped.returncode == 0, stopped.stderr
        assert not (own_state_dir / sandbox_module.STATE_FILE).exists()
        assert not alive(pid)
        assert sandbox_module.recorded() is None
    finally:
        kernel.kill()
        kernel.wait()
        if pid is not None and alive(pid):
            os.killpg(pid, signal.SIGKILL)
