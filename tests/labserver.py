"""A JupyterLab server of the tests' own, and the browser that drives it, for browser tests.

Bound to 127.0.0.1 on a free port, with no token (the browser is the test itself) and every Jupyter
folder (config, data, runtime, workspaces, user settings, IPython's) in a temporary folder, so that nothing of
the machine's own Jupyter setup is read or changed. The news and update notifications are switched
off in those user settings, as they would otherwise cover part of the page in screenshots.
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

# Loopback only: no proxy of the environment may stand between the test and its server.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))

# Debian's chromium (never a downloaded browser), headless, with no connection of its own to anywhere.
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

_QUIET = {
    "@jupyterlab/apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False}
}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _user_settings(config_dir: Path) -> None:
    for plugin, values in _QUIET.items():
        path = config_dir / "lab" / "user-settings" / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))


# Folders of the caller's environment that would add to, or stand in for, the server's own.
CALLERS_SEARCH_PATHS = ("JUPYTER_PATH", "JUPYTER_CONFIG_PATH", "JUPYTER_PREFER_ENV_PATH")


def isolated_env(home: Path, env: dict[str, str]) -> dict[str, str]:
    """``env`` with every folder Jupyter, IPython and Dask read or write moved under ``home``.

    A person who uses JupyterLab on the same machine may have ``JUPYTERLAB_WORKSPACES_DIR`` or
    ``JUPYTERLAB_SETTINGS_DIR`` set: inherited, a restored workspace asks for notebooks that are not
    there. ``DASK_CONFIG`` must be the caller's choice of a folder of the test's own, never absent
    (Dask would read ``~/.config/dask``).
    """
    if not env.get("DASK_CONFIG"):
        raise ValueError("give the lab server a DASK_CONFIG folder of the test's own")
    config_dir = home / "jupyter-config"
    isolated = {k: v for k, v in env.items() if k not in CALLERS_SEARCH_PATHS}
    isolated.update(
        {
            "JUPYTER_CONFIG_DIR": str(config_dir),
            "JUPYTER_DATA_DIR": str(home / "jupyter-data"),
            "JUPYTER_RUNTIME_DIR": str(home / "jupyter-runtime"),
            "JUPYTERLAB_WORKSPACES_DIR": str(home / "jupyterlab-workspaces"),
            "JUPYTERLAB_SETTINGS_DIR": str(config_dir / "lab" / "user-settings"),
            "IPYTHONDIR": str(home / "ipython"),
            "JUPYTER_PLATFORM_DIRS": "1",
        }
    )
    return isolated


@contextlib.contextmanager
def running_lab(home: Path, env: dict[str, str], *, timeout: float = 90) -> Iterator[str]:
    """Start ``jupyter lab`` serving ``home / "notebooks"``; yield its base URL; stop it afterwards.

    ``env`` is the environment of the server and of the kernels it starts (the tests' Dask config
    and sandbox folder). ``window.jupyterapp`` is exposed so that a test can switch the theme.
    """
    root = home / "notebooks"
    root.mkdir(parents=True, exist_ok=True)
    env = isolated_env(home, env)
    _user_settings(Path(env["JUPYTER_CONFIG_DIR"]))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        "--allow-root",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        "--IdentityProvider.token=",
        f"--ServerApp.root_dir={root}",
        "--LabApp.expose_app_in_browser=True",
    ]
    log_path = home / "jupyterlab.log"
    with open(log_path, "w") as log:
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=root)
    try:
        _wait_until_serving(url, server, log_path, timeout)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(10)


def _wait_until_serving(url: str, server: subprocess.Popen, log_path: Path, timeout: float):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"jupyter lab exited ({server.returncode}):\n{log_path.read_text()}")
        try:
            with _DIRECT.open(f"{url}/api/status", timeout=2) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.3)
    raise RuntimeError(f"jupyter lab did not answer in {timeout} s:\n{log_path.read_text()}")
