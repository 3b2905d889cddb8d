"""A fresh machine: without the sandbox extra (no moto), and the sandbox's first start.

Without moto, settings work must work and a cloud command must fail with one sentence naming the
command that installs it, before any start is attempted. A start that takes seconds must be announced
through the ``progress`` callback (the magics pass ``print``), never printed by the core itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import dask.config
import pytest

from coiled_jupyter import session
from coiled_jupyter.provision import sandbox

ROOT = Path(__file__).resolve().parents[1]
NO_MOTO = (
    "the sandbox backend needs moto, which is not installed; run pip install "
    "'coiled_jupyter[sandbox]' (or set coiled-jupyter.backend to aws)."
)

# In the child: the notebook's first commands through the magics and the session, as a new user
# types them after a plain `pip install coiled_jupyter`.
_FIRST_COMMANDS = r"""
import importlib.util, json
assert importlib.util.find_spec("moto") is None
from IPython.core.interactiveshell import InteractiveShell
from coiled_jupyter import session
from coiled_jupyter.errors import CoiledJupyterError

shell = InteractiveShell.instance()
shell.run_line_magic("load_ext", "coiled_jupyter")
out = {}
shell.run_line_magic("coiled_ingress", "")
shell.run_line_magic("coiled_ingress", "add 8786,8787 10.1.0.0/16")
shell.run_line_magic("coiled_scheduler_ip", "private")
shell.run_line_magic("coiled_ingress", "save")
out["rules"] = [r.source for r in session.show().settings.rules]
try:
    session.plan()
except CoiledJupyterError as error:
    out["plan"] = str(error)
try:
    shell.run_line_magic("coiled_ingress", "apply")
except Exception as error:
    out["magic"] = f"{type(error).__name__}: {error}"
print(json.dumps(out))
"""


def test_without_moto_settings_work_and_a_cloud_command_is_one_sentence(tmp_path):
    hide = tmp_path / "hide-moto"
    hide.mkdir()
    # A module set to None in sys.modules cannot be imported, and find_spec reports it missing.
    (hide / "sitecustomize.py").write_text("import sys\nsys.modules['moto'] = None\n")
    state = tmp_path / "state"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(hide), str(ROOT)]),
        "DASK_CONFIG": str(tmp_path / "dask-config"),
        "DASK_COILED_JUPYTER__SANDBOX__STATE_DIR": str(state),
    }
    try:
        done = subprocess.run(
            [sys.executable, "-c", _FIRST_COMMANDS],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        if (state / "sandbox.json").exists():  # a start was attempted after all: clean up
            subprocess.run(
                [sys.executable, "-m", "coiled_jupyter.provision.sandbox", "stop"],
                env={**env, "PYTHONPATH": str(ROOT)},
                capture_output=True,
                timeout=60,
            )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["rules"] == ["10.1.0.0/16", "10.1.0.0/16"]
    assert (tmp_path / "dask-config" / "coiled.yaml").exists()
    assert out["plan"] == NO_MOTO
    assert out["magic"] == f"UsageError: {NO_MOTO}"
    assert "Traceback" not in done.stderr
    assert not (state / "sandbox.json").exists()  # no start was attempted


@pytest.fixture
def no_sandbox_yet(tmp_path, dask_config):
    """A state folder where no sandbox runs yet; the one the test starts is stopped at the end."""
    with dask.config.set({"coiled-jupyter.sandbox.state-dir": str(tmp_path / "state")}):
        try:
            yield
        finally:
            sandbox.stop()


def test_a_cold_start_says_what_it_waits_for_through_progress_only(no_sandbox_yet, capfd):
    heard: list[str] = []
    session.add(8786, "10.1.0.0/16", cluster="cold")
    session.show("cold")
    assert sandbox.running() is None  # settings work started nothing
    session.plan("cold", progress=heard.append)
    assert heard == ["starting the local sandbox (moto) ..."]
    assert sandbox.running() is not None
    session.apply("cold", progress=heard.append)
    session.describe("cold", progress=heard.append)
    assert heard == ["starting the local sandbox (moto) ..."]  # said once, for the one start
    out, err = capfd.readouterr()
    assert "sandbox" not in out + err
