"""The sandbox backend: moto's EC2- and SSM-compatible server on 127.0.0.1, shared by one machine.

The first kernel (or Jupyter server) that needs it starts it in its own process session, so that it
outlives that kernel, and writes its address to a state file; every other kernel and the Jupyter server
of the same JupyterLab find it there, so all of them see the same groups. A file lock makes two kernels
starting at once end with one server. It holds its state in memory and is stopped with :func:`stop`
(``python -m coiled_jupyter.provision.sandbox stop`` or ``make sandbox-stop``).

Credentials for it are fixed dummy values: moto accepts any, and no real key must ever be sent to it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from ..errors import CloudError, CoiledJupyterError
from ..state import file_lock, state_dir

HOST = "127.0.0.1"
REGION = "us-east-1"
DUMMY_KEY = "sandbox"
STATE_FILE = "sandbox.json"
_START_TIMEOUT = 30.0
# How long a recorded server has to answer before it counts as busy or paused (never as stopped).
_LIVENESS_WAIT = 2.0
# The server is on loopback: requests to it never go through an HTTP(S)_PROXY of the environment.
_direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass(frozen=True)
class Server:
    """A running sandbox server."""

    pid: int
    port: int

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"


def _state_file() -> Path:
    return state_dir() / STATE_FILE


def _locked():
    return file_lock("sandbox.lock", what="the sandbox server's start or stop")


def _record() -> dict:
    """The state file as written (``{}`` when there is none or it cannot be read)."""
    try:
        state = json.loads(_state_file().read_text())
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def _server_of(state: dict) -> Server | None:
    try:
        return Server(int(state["pid"]), int(state["port"]))
    except (KeyError, TypeError, ValueError):
        return None


def _write(state: dict) -> None:
    temp = _state_file().with_suffix(".tmp")
    with _environment("record the sandbox server", _state_file()):
        temp.write_text(json.dumps(state))
        os.replace(temp, _state_file())


@contextlib.contextmanager
def _environment(doing: str, path: Path):
    """A full disk, a read-only or foreign state folder: one sentence, not a traceback."""
    try:
        yield
    except OSError as error:
        reason = (error.strerror or type(error).__name__).lower()
        raise CoiledJupyterError(
            f"could not {doing} at {path} ({reason}); make that folder writable, or set "
            "coiled-jupyter.sandbox.state-dir in Dask's config to a folder that is."
        ) from None


def recorded() -> Server | None:
    """The recorded server if the state file's process is still that server, answering or not; no
    request is sent. None when nothing is recorded, or its process is gone, a zombie or another
    program (a recycled pid must never be signalled by :func:`stop`, and another program's moto on
    that port is not ours to share)."""
    server = _server_of(_record())
    return server if server is not None and _is_our_process(server) else None


def running() -> Server | None:
    """The shared server if it is recorded and answers within the liveness wait, else None."""
    server = recorded()
    return server if server is not None and _answers(server) else None


def answering() -> Server | None:
    """The recorded server, or None when there is none; a recorded server that does not answer
    within the liveness wait is a :class:`CloudError` (``SandboxNotAnswering``), never taken for a
    stopped one: it may be busy or paused, and it still holds its groups and account defaults."""
    server = recorded()
    if server is not None and not _answers(server):
        raise _not_answering(server)
    return server


def _not_answering(server: Server) -> CloudError:
    started = _record().get("started", "an unknown time")
    return CloudError(
        "SandboxNotAnswering",
        f"the sandbox server (pid {server.pid}, started at {started}) is running but did not "
        f"answer within {_LIVENESS_WAIT:g} s (busy or paused); nothing was read or changed. Run "
        "it again in a moment; if it never answers, stop it with python -m "
        "coiled_jupyter.provision.sandbox stop (its groups and account defaults are then lost).",
    )


def _is_our_process(server: Server) -> bool:
    import psutil

    try:
        process = psutil.Process(server.pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        command = process.cmdline()
    except (psutil.Error, OSError):
        return False
    return "moto.server" in command and str(server.port) in command


def _answers(server: Server) -> bool:
    try:
        with _direct.open(f"{server.url}/moto-api/", timeout=_LIVENESS_WAIT) as response:
            return response.status == 200
    except (OSError, urllib.error.URLError):
        return False


def ensure() -> Server:
    """The shared server, started on first use.

    A recorded server that is gone is replaced, and never silently: the new record says when and
    why, so that every table can say the earlier groups are gone (:func:`restart_warning`) until
    someone acknowledges it. A recorded server that is alive but does not answer is never replaced
    (it would take its groups with it): that is a :class:`CloudError` saying so (see
    :func:`answering`). Under the lock, so that a server another process is starting is waited for.
    """
    server = running()
    if server is not None:
        return server
    with _locked():
        server = answering()
        if server is None:
            server = _start(_replaced(_record()))
    return server


def _replaced(previous: dict) -> dict | None:
    """What starting over after the recorded server (gone) must announce, if anything."""
    old = _server_of(previous)
    if old is None:
        return None
    # A record without "ready" was written by an earlier version, once its server answered.
    if not previous.get("ready", True):
        return previous.get("restarted")  # it never served: nothing more was lost
    return {
        "at": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "previous_started": previous.get("started", "an unknown time"),
        "previous_pid": old.pid,
    }


def endpoint() -> str:
    return ensure().url


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def _start(restarted: dict | None = None) -> Server:
    """Start a server and record it before waiting for it to answer, so that a kernel killed during
    the start leaves a record (:func:`stop` finds it) rather than an unknown server."""
    port = _free_port()
    with _environment("open the sandbox's log", state_dir() / "sandbox.log"):
        log = open(state_dir() / "sandbox.log", "ab")
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(port)],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
        start_new_session=True,
    )
    log.close()
    server = Server(process.pid, port)
    state = {
        "pid": server.pid,
        "port": server.port,
        "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "ready": False,
    }
    if restarted:
        state["restarted"] = restarted
    _write(state)
    deadline = time.monotonic() + _START_TIMEOUT
    while not _answers(server):
        if process.poll() is not None or time.monotonic() > deadline:
            _terminate(server.pid)
            _state_file().unlink(missing_ok=True)
            raise CoiledJupyterError(
                f"the sandbox server did not start; see {state_dir() / 'sandbox.log'}"
                " (is the 'sandbox' extra installed: pip install "
                "'coiled_jupyter[sandbox]'?)"
            )
        time.sleep(0.05)
    _write({**state, "ready": True})
    return server


def restart_warning() -> str | None:
    """The sentence every sandbox table carries after the server was replaced, until
    :func:`acknowledge_restart`; None when there is nothing to announce."""
    restarted = _record().get("restarted")
    if not isinstance(restarted, dict):
        return None
    return (
        f"the sandbox server was restarted at {restarted.get('at')} (the one started at "
        f"{restarted.get('previous_started')} had stopped); the security groups and "
        "account defaults it held are gone. Run apply again, then acknowledge with: python -m "
        "coiled_jupyter.provision.sandbox ack"
    )


def acknowledge_restart() -> bool:
    """Stop announcing the last restart; False when none was being announced."""
    with _locked():
        state = _record()
        if "restarted" not in state:
            return False
        del state["restarted"]
        _write(state)
        return True


_resets_here = 0


def resets_here() -> int:
    """How many times this process reset the server: part of the key under which the account
    defaults last read are remembered, so that none outlives the reset that emptied the store."""
    return _resets_here


def reset() -> None:
    """Forget every group and parameter in the shared server (tests, and starting over)."""
    global _resets_here
    server = running()
    if server is not None:
        request = urllib.request.Request(f"{server.url}/moto-api/reset", method="POST")
        with _direct.open(request, timeout=10):
            pass
        _resets_here += 1


def stop() -> bool:
    """Stop the recorded server, answering or hung; False when none was running."""
    with _locked():
        server = _server_of(_record())
        _state_file().unlink(missing_ok=True)
        if server is None or not _is_our_process(server):
            return False
        _terminate(server.pid)
        return True


def _terminate(pid: int) -> None:
    """SIGTERM (with SIGCONT, so that a stopped, hung server handles it), then SIGKILL."""
    for sent in (signal.SIGTERM, signal.SIGCONT):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sent)
    deadline = time.monotonic() + 10
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if _alive(pid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)


def _alive(pid: int) -> bool:
    """Is ``pid`` still running? A zombie is not: it has exited, and only its parent (the kernel
    that started it, if that still lives) can reap it, so waiting for it would wait for nothing."""
    import psutil

    with contextlib.suppress(ChildProcessError):
        if os.waitpid(pid, os.WNOHANG)[0]:
            return False  # our own child, reaped now
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def main(argv: list[str] | None = None) -> int:
    """``python -m coiled_jupyter.provision.sandbox start|stop|status|ack``."""
    args = sys.argv[1:] if argv is None else argv
    command = args[0] if args else "status"
    if command == "start":
        print(f"sandbox running at {ensure().url}")
    elif command == "stop":
        print("sandbox stopped" if stop() else "no sandbox was running")
    elif command == "status":
        server = running()
        print(
            f"sandbox running at {server.url} (pid {server.pid})"
            if server
            else "no sandbox is running"
        )
        warning = restart_warning()
        if warning:
            print(warning)
    elif command == "ack":
        print("restart acknowledged" if acknowledge_restart() else "no restart to acknowledge")
    else:
        print(
            "usage: python -m coiled_jupyter.provision.sandbox start|stop|status|ack",
            file=sys.stderr,
        )
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
