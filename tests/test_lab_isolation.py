"""The tests' lab server reads no Jupyter, IPython or Dask folder of the person running the tests.

A person who uses JupyterLab on the same machine may have ``JUPYTERLAB_WORKSPACES_DIR`` set; when the
tests' server inherited it, a restored workspace asked for a notebook that is not there and the
browser tests failed for that person only.
"""

from __future__ import annotations

import json
import os
import urllib.request

import pytest
from labserver import _DIRECT, isolated_env, running_lab

FOLDERS = (
    "JUPYTER_CONFIG_DIR",
    "JUPYTER_DATA_DIR",
    "JUPYTER_RUNTIME_DIR",
    "JUPYTERLAB_WORKSPACES_DIR",
    "JUPYTERLAB_SETTINGS_DIR",
    "IPYTHONDIR",
)


def test_every_folder_of_the_caller_is_replaced_by_one_of_the_test(tmp_path):
    callers = {name: f"/home/someone/{name.lower()}" for name in FOLDERS}
    callers |= {"JUPYTER_PATH": "/home/someone/extra", "JUPYTER_CONFIG_PATH": "/home/someone/etc"}
    env = isolated_env(tmp_path, {**callers, "DASK_CONFIG": str(tmp_path / "dask")})
    for name in FOLDERS:
        assert env[name].startswith(str(tmp_path)), name
    assert "JUPYTER_PATH" not in env and "JUPYTER_CONFIG_PATH" not in env
    assert env["DASK_CONFIG"] == str(tmp_path / "dask")


def test_a_lab_server_without_a_dask_config_folder_of_its_own_is_not_started(tmp_path):
    with pytest.raises(ValueError, match="DASK_CONFIG"):
        isolated_env(tmp_path, {"HOME": str(tmp_path)})


def test_the_lab_server_does_not_restore_the_callers_workspace(tmp_path, monkeypatch):
    callers = tmp_path / "callers-workspaces"
    callers.mkdir()
    bogus = {"data": {"layout-restorer:data": {}}, "metadata": {"id": "bogus-of-the-caller"}}
    (callers / "bogus-of-the-caller-1a2b.jupyterlab-workspace").write_text(json.dumps(bogus))
    monkeypatch.setenv("JUPYTERLAB_WORKSPACES_DIR", str(callers))
    home = tmp_path / "lab"
    (home / "dask-config").mkdir(parents=True)
    env = {**os.environ, "DASK_CONFIG": str(home / "dask-config")}
    with running_lab(home, env) as url:
        request = urllib.request.Request(f"{url}/lab/api/workspaces")
        with _DIRECT.open(request, timeout=30) as answer:
            listed = json.loads(answer.read())
    assert "bogus-of-the-caller" not in json.dumps(listed)
    assert listed["workspaces"]["ids"] == [], listed
