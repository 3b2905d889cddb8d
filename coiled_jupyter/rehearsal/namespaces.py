"""Network namespaces for a rehearsal: a switch, a scheduler behind nftables, and clients.

Layout (every name starts with ``cjr-`` and the id of the process that made it, so what is ours is
recognisable, and several processes of one machine can rehearse at once)::

    cjr-PID-sw      a "switch": the bridge cjr-br, and one veth end per namespace below
    cjr-PID-sched   the scheduler's machine: 172.31.0.10 and fd63:6a72::10, the nft table, and the
                    serve process (a real ``distributed`` scheduler and one worker)
    cjr-PID-c0 ...  one client namespace per source, its address swapped as sources change

Every veth is created inside ``cjr-sw`` with its other end moved straight into its namespace, so
nothing is ever attached to the host's own network namespace and no packet can leave: the addresses
(10.1.0.5 standing for a VPN client, ...) are data, used only between these namespaces. Routes are
"everything on the link", so any source address can talk to the scheduler across the bridge.

Probes run in this process: a thread enters a client namespace (``setns``) and opens its socket there,
which is far quicker than starting a process per probe. Every start removes what rehearsals of
processes that are gone left (namespaces, and the processes inside them), and the serve process ends
by itself when the process that started it is gone.
"""

from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import json
import os
import platform
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..errors import CoiledJupyterError
from .nft import ruleset

PREFIX = "cjr-"
BRIDGE = "cjr-br"
SCHEDULER_ADDRESSES = ("172.31.0.10", "fd63:6a72::10")
_LINK = "eth0"
_NETNS_DIR = "/run/netns"
_CLONE_NEWNET = 0x40000000
_LINK_WAIT_SECONDS = 10.0
_POLL_SECONDS = 0.02
YES, NO = "yes", "no"
# Every address is on the link: any source reaches the scheduler across the bridge, and back.
_ROUTES = (f"route replace default dev {_LINK}", f"route replace ::/0 dev {_LINK}")


class RehearsalUnavailable(CoiledJupyterError):
    """This machine cannot run a rehearsal; the sentence says why and what would make it possible."""


def unavailable() -> str | None:
    """Why a rehearsal cannot run here, as one sentence, or None when it can."""
    if platform.system() != "Linux":
        return (
            f"a rehearsal needs Linux network namespaces and nftables, and this is "
            f"{platform.system()}; run it on a Linux machine (or a Linux container run as root)."
        )
    missing = [
        tool for tool, package in (("ip", "iproute2"), ("nft", "nftables")) if not _which(tool)
    ]
    if missing:
        packages = " and ".join({"ip": "iproute2", "nft": "nftables"}[t] for t in missing)
        return (
            f"a rehearsal needs the {' and '.join(missing)} command{'s' if len(missing) > 1 else ''}, "
            f"which {'are' if len(missing) > 1 else 'is'} not installed; install {packages} "
            f"(e.g. apt-get install {packages.replace(' and ', ' ')})."
        )
    import importlib.util

    if importlib.util.find_spec("distributed") is None:
        return (
            "a rehearsal runs a real dask scheduler, and the distributed package is not "
            "installed in this kernel; install it (pip install distributed)."
        )
    if os.geteuid() != 0:
        return (
            "a rehearsal creates network namespaces, which needs root here; run Jupyter as root "
            "(e.g. in a container of its own). Rehearsing inside an unprivileged user namespace "
            "(unshare -Urnm) is not supported yet."
        )
    return None


def _which(tool: str) -> str | None:
    return shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/sbin:/usr/bin:/bin")


def _run(*args: str, stdin: str | None = None) -> str:
    """Run ``ip``/``nft``; a failure is a bug or a broken machine, so it says what failed."""
    done = subprocess.run(
        [_which(args[0]) or args[0], *args[1:]], input=stdin, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise CoiledJupyterError(
            f"the rehearsal could not run `{' '.join(args)}`: {done.stderr.strip()}"
        )
    return done.stdout


def _batch(namespace: str | None, commands: Sequence[str]) -> None:
    """Several ``ip`` commands in one process, inside ``namespace`` (None: only ``netns`` ones)."""
    if commands:
        prefix = ["-n", namespace] if namespace else []
        _run("ip", *prefix, "-batch", "-", stdin="\n".join(commands) + "\n")


# --------------------------------------------------------------------------------------------------
# What is ours, and removing it


def ours(pid: int | None = None) -> list[str]:
    """The namespaces of the rehearsal of process ``pid`` (default: this one) that exist now."""
    return sorted(n for n in listed() if _owner(n) == (os.getpid() if pid is None else pid))


def leftovers() -> list[str]:
    """Namespaces of ours whose process is gone (killed before it could clean up)."""
    return sorted(n for n in listed() if not _alive(_owner(n)))


def listed() -> list[str]:
    """Every namespace of ours on this machine, whichever process made it."""
    names = [line.split()[0] for line in _run("ip", "netns", "list").splitlines() if line.strip()]
    return [n for n in names if n.startswith(PREFIX)]


def _owner(name: str) -> int | None:
    """The process id in ``cjr-PID-...``, or None for a name of another shape."""
    word = name[len(PREFIX) :].split("-", 1)[0]
    return int(word) if word.isdigit() else None


def _alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove(names: Sequence[str]) -> None:
    """Remove these namespaces of ours, ending the processes inside them first.

    Deleting a namespace takes its links with it (a veth pair goes when either end goes), and the
    nft table in it; a process inside would keep the namespace alive unnamed, so it is ended.
    """
    for name in names:
        for pid in _run("ip", "netns", "pids", name).split():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
    _batch(None, [f"netns delete {name}" for name in names])


def _name(role: str) -> str:
    return f"{PREFIX}{os.getpid()}-{role}"


# --------------------------------------------------------------------------------------------------
# Probes


@dataclass(frozen=True)
class Measured:
    """One real connection attempt: ``yes`` (connected) or ``no``, how long it took, and what happened."""

    verdict: str
    seconds: float
    detail: str


def _enter(namespace: str) -> None:
    """Move the calling thread (only it) into ``namespace``'s network."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"{_NETNS_DIR}/{namespace}", os.O_RDONLY)
    try:
        if libc.setns(fd, _CLONE_NEWNET) != 0:
            error = ctypes.get_errno()
            raise OSError(error, f"setns into {namespace}: {os.strerror(error)}")
    finally:
        os.close(fd)


def in_namespace(namespace: str, work: Callable[[], Measured]) -> Measured:
    """Run ``work`` in a thread of its own inside ``namespace`` and return what it measured."""
    found: list = []

    def run() -> None:
        try:
            _enter(namespace)
            found.append(work())
        except BaseException as error:  # handed to the caller's thread
            found.append(error)

    thread = threading.Thread(target=run, name=f"coiled-jupyter-{namespace}", daemon=True)
    thread.start()
    thread.join()
    if isinstance(found[0], BaseException):
        raise found[0]
    return found[0]


def _timed(attempt: Callable[[], str]) -> Measured:
    """``attempt()`` returns what it saw; an OSError (a timeout, a refusal) is a ``no``."""
    started = time.perf_counter()
    try:
        detail = attempt()
        verdict = YES
    except OSError as error:
        detail = "timed out" if isinstance(error, TimeoutError) else (error.strerror or str(error))
        verdict = NO
    return Measured(verdict, time.perf_counter() - started, detail)


def tcp_connect(host: str, port: int, timeout: float) -> Measured:
    """A TCP handshake with ``host:port`` (from the calling thread's namespace)."""

    def attempt() -> str:
        with socket.create_connection((host, port), timeout=timeout):
            return "connected"

    return _timed(attempt)


def http_get(host: str, port: int, timeout: float, path: str = "/health") -> Measured:
    """An HTTP GET of the dashboard (``/health`` answers without bokeh too)."""
    import http.client

    def attempt() -> str:
        connection = http.client.HTTPConnection(host, port, timeout=timeout)
        try:
            connection.request("GET", path)
            response = connection.getresponse()
            response.read()
            return f"HTTP {response.status}"
        except http.client.HTTPException as error:
            raise OSError(f"not HTTP: {error}") from None
        finally:
            connection.close()

    return _timed(attempt)


def client_connect(host: str, port: int, timeout: float) -> Measured:
    """A real ``distributed.Client`` connecting to the scheduler (in the calling thread's namespace).

    The client runs on an event loop of this thread, so its sockets are opened in the namespace.
    """
    import asyncio

    from distributed import Client

    address = f"tcp://[{host}]:{port}" if ":" in host else f"tcp://{host}:{port}"

    async def connect() -> str:
        client = await Client(address, asynchronous=True, timeout=timeout, set_as_default=False)
        await client.close()
        return "connected"

    def attempt() -> str:
        try:
            return asyncio.run(connect())
        except OSError as error:
            # distributed says "Timed out trying to connect to ..." in a plain OSError.
            if str(error).startswith("Timed out"):
                raise TimeoutError(str(error)) from None
            raise

    return _timed(attempt)


# --------------------------------------------------------------------------------------------------
# The rehearsal


class Rehearsal:
    """The namespaces and the scheduler of one rehearsal, built once and reused.

    ``load(text)`` swaps the nft ruleset; ``place(addresses)`` gives client namespaces those
    addresses (one each); the probes connect from a client namespace to the scheduler.
    """

    def __init__(self, scheduler_port: int, dashboard_port: int):
        self.scheduler_port = scheduler_port
        self.dashboard_port = dashboard_port
        self.switch = _name("sw")
        self.scheduler = _name("sched")
        self.clients: list[str] = []
        self._serve: subprocess.Popen | None = None
        self._log = None

    # ---- life

    def start(self, *, timeout: float = 60.0) -> Rehearsal:
        """Build the switch and the scheduler's namespace and start the scheduler; ready on return."""
        reason = unavailable()
        if reason:
            raise RehearsalUnavailable(reason)
        try:
            # What a killed rehearsal left, and what an earlier one of this process did not remove.
            remove([*leftovers(), *ours()])
            _batch(None, [f"netns add {self.switch}", f"netns add {self.scheduler}"])
            _batch(
                self.switch,
                ["link set lo up", f"link add {BRIDGE} type bridge", f"link set {BRIDGE} up"],
            )
            self._wire(self.scheduler, SCHEDULER_ADDRESSES)
            # Nothing from outside is admitted until the group's rules are loaded.
            self.load(ruleset([]).text)
            self._start_serve(timeout)
        except BaseException:
            self.close()
            raise
        return self

    def _wire(self, namespace: str, addresses: Sequence[str]) -> None:
        """Link ``namespace`` to the bridge and give it ``addresses``, all on-link."""
        port = "p-" + namespace.rsplit("-", 1)[1]
        _batch(
            self.switch,
            [
                f"link add {port} type veth peer name {_LINK} netns {namespace}",
                f"link set {port} master {BRIDGE} up",
            ],
        )
        _batch(
            namespace,
            [
                "link set lo up",
                f"link set {_LINK} up",
                *_address_commands(addresses),
                *_ROUTES,
            ],
        )
        _wait_for_link(namespace)

    def _start_serve(self, timeout: float) -> None:
        command = [
            _which("ip") or "ip",
            "netns",
            "exec",
            self.scheduler,
            sys.executable,
            "-m",
            "coiled_jupyter.rehearsal.serve",
            "--parent",
            str(os.getpid()),
            "--scheduler-port",
            str(self.scheduler_port),
            "--dashboard-port",
            str(self.dashboard_port),
        ]
        # The scheduler's log goes to a file: a pipe no one reads would stall it once full.
        self._log = tempfile.TemporaryFile(mode="w+")
        self._serve = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=self._log, stdin=subprocess.DEVNULL, text=True
        )
        ready, _, _ = select.select([self._serve.stdout], [], [], timeout)
        line = self._serve.stdout.readline() if ready else ""
        if line.strip() != "ready":
            self._serve.kill()
            self._serve.wait()
            self._log.seek(0)
            tail = " ".join(self._log.read().strip().splitlines()[-1:])
            raise CoiledJupyterError(
                f"the rehearsal's scheduler did not start ({line.strip()!r}): "
                f"{tail or f'no answer in {timeout:g} s'}"
            )

    @property
    def alive(self) -> bool:
        return self._serve is not None and self._serve.poll() is None

    def close(self) -> None:
        """End the scheduler and remove this process's namespaces."""
        if self._serve is not None:
            if self._serve.poll() is None:
                self._serve.terminate()
                try:
                    self._serve.wait(10)
                except subprocess.TimeoutExpired:
                    self._serve.kill()
                    self._serve.wait()
            self._serve.stdout.close()
            self._log.close()
            self._serve = None
        if unavailable() is None:
            remove(ours())
        self.clients = []

    def __enter__(self) -> Rehearsal:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- rules and sources

    def load(self, text: str) -> None:
        """Replace the scheduler's nft table by ``text`` (atomically: nft loads a file as one)."""
        _run("ip", "netns", "exec", self.scheduler, _which("nft") or "nft", "-f", "-", stdin=text)

    def place(self, addresses: Sequence[str]) -> list[str]:
        """Client namespaces holding ``addresses``, one each, in order (more are made as needed).

        The scheduler forgets its neighbours, since an address may now sit in another namespace.
        """
        for index in range(len(self.clients), len(addresses)):
            name = _name(f"c{index}")
            _batch(None, [f"netns add {name}"])
            self._wire(name, ())
            self.clients.append(name)
        for index, name in enumerate(self.clients):
            # A namespace left without a source keeps no address another one may take now; the
            # kernel drops a family's routes with its last address, so they are put back.
            given = _address_commands(addresses[index : index + 1])
            _batch(name, [f"addr flush dev {_LINK} scope global", *given, *_ROUTES])
        _batch(self.scheduler, ["neigh flush all"])
        return self.clients[: len(addresses)]

    # ---- probes

    def scheduler_host(self, version: int) -> str:
        return SCHEDULER_ADDRESSES[0 if version == 4 else 1]

    def probe(self, namespace: str, kind: str, version: int, timeout: float) -> Measured:
        """From ``namespace``: ``tcp`` to the scheduler port, ``tcp-dashboard``, ``client`` (a real
        ``distributed.Client``) or ``http`` (a GET of the dashboard), over IPv4 or IPv6."""
        host = self.scheduler_host(version)
        work = {
            "tcp": lambda: tcp_connect(host, self.scheduler_port, timeout),
            "tcp-dashboard": lambda: tcp_connect(host, self.dashboard_port, timeout),
            "client": lambda: client_connect(host, self.scheduler_port, timeout),
            "http": lambda: http_get(host, self.dashboard_port, timeout),
        }[kind]
        return in_namespace(namespace, work)

    def counters(self) -> str:
        """The loaded ruleset as nft lists it (for a failing test's message)."""
        return _run(
            "ip", "netns", "exec", self.scheduler, _which("nft") or "nft", "list", "ruleset"
        )


def _address_commands(addresses: Sequence[str]) -> list[str]:
    """``ip addr add`` lines: host addresses (/32, /128), IPv6 without duplicate detection (which
    would hold a new address back for a second or two)."""
    commands = []
    for text in addresses:
        address = ipaddress.ip_address(text)
        if address.version == 4:
            commands.append(f"addr add {address}/32 dev {_LINK}")
        else:
            commands.append(f"addr add {address}/128 dev {_LINK} nodad")
    return commands


def _wait_for_link(namespace: str) -> None:
    """Until the namespace's link is up: a packet sent before that is lost, and TCP would retry only
    a second later."""
    deadline = time.monotonic() + _LINK_WAIT_SECONDS
    while True:
        shown = json.loads(_run("ip", "-n", namespace, "-j", "link", "show", _LINK))
        if shown and shown[0].get("operstate") == "UP":
            return
        if time.monotonic() > deadline:
            raise CoiledJupyterError(
                f"the rehearsal's link in {namespace} did not come up in {_LINK_WAIT_SECONDS:g} s."
            )
        time.sleep(_POLL_SECONDS)
