"""The packaging that puts the lab extension and the server extension into one wheel holds together."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import tomllib
from pathlib import Path

import coiled_jupyter

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_JSON = json.loads((ROOT / "labextension" / "package.json").read_text())
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_python_and_npm_packages_have_one_version():
    assert PACKAGE_JSON["version"] == PYPROJECT["project"]["version"] == coiled_jupyter.__version__


def test_the_wheel_installs_the_built_extension_where_lab_finds_it():
    shared = PYPROJECT["tool"]["hatch"]["build"]["targets"]["wheel"]["shared-data"]
    output = (ROOT / "labextension" / PACKAGE_JSON["jupyterlab"]["outputDir"]).resolve()
    target = f"share/jupyter/labextensions/{PACKAGE_JSON['name']}"
    assert shared[str(output.relative_to(ROOT))] == target
    # One mapping into the extension's folder: a second (install.json, say) would add a file twice
    # once `jupyter-builder develop` links that folder to the built output.
    assert [t for t in shared.values() if t.startswith(target)] == [target]
    assert "install.json" in PACKAGE_JSON["scripts"]["build:install-json"]
    [path] = coiled_jupyter._jupyter_labextension_paths()
    assert (Path(coiled_jupyter.__file__).parent / path["src"]).resolve() == output
    assert path["dest"] == PACKAGE_JSON["name"]


def test_the_server_extension_is_enabled_on_install_and_loads():
    shared = PYPROJECT["tool"]["hatch"]["build"]["targets"]["wheel"]["shared-data"]
    assert shared["jupyter-config/server-config"] == "etc/jupyter/jupyter_server_config.d"
    config = json.loads((ROOT / "jupyter-config/server-config/coiled_jupyter.json").read_text())
    assert config["ServerApp"]["jpserver_extensions"] == {"coiled_jupyter": True}
    [point] = coiled_jupyter._jupyter_server_extension_points()
    assert callable(importlib.import_module(point["module"])._load_jupyter_server_extension)


def test_the_package_and_its_magics_import_no_server_library():
    code = (
        "import sys, coiled_jupyter, coiled_jupyter.magics; "
        "print(sorted(m for m in ('tornado', 'jupyter_server') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
