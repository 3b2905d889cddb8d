"""Environment failures (an unwritable state folder, a file in its place) are one sentence, not a
traceback, in the Python API and in the magics."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import dask.config
import pytest
from IPython.core.error import UsageError

from coiled_jupyter.errors import CoiledJupyterError
from coiled_jupyter.provision import sandbox as sandbox_module


@pytest.fixture
def state_dir_is_a_file(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    with dask.config.set({"coiled-jupyter.sandbox.state-dir": str(blocker)}):
        yield blocker


def test_a_file_in_place_of_the_state_folder_is_one_sentence(state_dir_is_a_file):
    with pytest.raises(CoiledJupyterError) as caught:
        sandbox_module.ensure()
    message = str(caught.value)
    assert str(state_dir_is_a_file) in message and "\n" not in message
    assert "sandbox.state-dir" in message


def test_the_settings_magic_says_it_in_one_sentence(state_dir_is_a_file, dask_config):
    from IPython.testing.globalipapp import get_ipython

    ip = get_ipython()
    ip.run_line_magic("load_ext", "coiled_jupyter")
    try:
        with pytest.raises(UsageError, match="state directory"):
            ip.run_line_magic("coiled_ingress", "")
    finally:
        ip.run_line_magic("unload_ext", "coiled_jupyter")


_AS_NOBODY = textwrap.dedent("""\
    import json, os
    from coiled_jupyter.errors import CoiledJupyterError
    from coiled_jupyter.provision import sandbox
    import psutil
    sandbox.state_dir()  # imports dask while still root (Python itself lives under /root here)
    os.setegid(65534)
    os.seteuid(65534)
    try:
        sandbox.ensure()
        print(json.dumps({"started": True}))
    except CoiledJupyterError as error:
        print(json.dumps({"refused": str(error)}))
    """)


@pytest.mark.skipif(os.geteuid() != 0, reason="switching to another user needs root")
def test_a_state_folder_the_kernel_may_not_write_is_one_sentence():
    folder = Path(tempfile.mkdtemp(prefix="coiled-jupyter-state-"))
    try:
        os.chmod(folder, 0o755)  # root's, so user nobody may not create the lock in it
        env = {**os.environ, "DASK_COILED_JUPYTER__SANDBOX__STATE_DIR": str(folder)}
        result = subprocess.run(
            [sys.executable, "-c", _AS_NOBODY], env=env, capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, result.stderr
        answer = json.loads(result.stdout)
        assert "permission denied" in answer.get("refused", "").lower(), answer
    finally:
        shutil.rmtree(folder)
