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

from ..errors import CoiledJupyterError
from ..state import file_lock, state_dir

HOST = "127.0.0.1"
REGION = "us-east-1"
DUMMY_KEY = "sandbox"
STATE_FILE = "sandbox.json"
_START_TIMEOUT = 30.0
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


def running() -> Server | None:
    """The shared server if the state file's process is still that server and it answers, else None.

    Checking the process, not only the port, matters: a recycled pid must never be signalled by
    :func:`stop`, and another program's moto on that port is not ours to share.
    """
    try:
        state = json.loads(_state_file().read_text())
        server = Server(int(state["pid"]), int(state["port"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return server if _is_our_process(server) and _answers(server) else None


def _is_our_process(server: Server) -> bool:
    import psutil

    try:
        command = psutil.Process(server.pid).cmdline()
    except (psutil.Error, OSError):
        return False
    return "moto.server" in command and str(server.port) in command


def _answers(server: Server) -> bool:
    try:
        with _direct.open(f"{server.url}/moto-api/", timeout=2) as response:
            return response.status == 200
    except (OSError, urllib.error.URLError):
        return False


def ensure() -> Server:
    """The shared server, started on first use."""
    server = running()
    if server is not None:
        return server
    with _locked():
        server = running()
        if server is None:
            server = _start()
    return server


def endpoint() -> str:
    return ensure().url


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def _start() -> Server:
    port = _free_port()
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
    deadline = time.monotonic() + _START_TIMEOUT
    while not _answers(server):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise CoiledJupyterError(
                f"the sandbox server did not start; see {state_dir() / 'sandbox.log'}"
                " (is the 'sandbox' extra installed: pip install "
                "'coiled_jupyter[sandbox]'?)"
            )
        time.sleep(0.05)
    temp = _state_file().with_suffix(".tmp")
    temp.write_text(json.dumps({"pid": server.pid, "port": server.port}))
    os.replace(temp, _state_file())
    return server


def reset() -> None:
    """Forget every group and parameter in the shared server (tests, and starting over)."""
    server = running()
    if server is not None:
        request = urllib.request.Request(f"{server.url}/moto-api/reset", method="POST")
        with _direct.open(request, timeout=10):
            pass


def stop() -> bool:
    """Stop the shared server; False when none was running."""
    with _locked():
        server = running()
        _state_file().unlink(missing_ok=True)
        if server is None:
            return False
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while _alive(server.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _alive(server.pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server.pid, signal.SIGKILL)
        return True


def _alive(pid: int) -> bool:
    try:
        finished, _ = os.waitpid(pid, os.WNOHANG)
        if finished:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    """``python -m coiled_jupyter.provision.sandbox start|stop|status``."""
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
    else:
        print(
            "usage: python -m coiled_jupyter.provision.sandbox start|stop|status", file=sys.stderr
        )
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
