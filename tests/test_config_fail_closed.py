"""A Dask config file that may hold our keys but cannot be read or parsed fails closed.

Dask's own loader skips a file it cannot open, so restrictive ingress in it silently became the
world-open built-in default. Here every operation that uses the settings refuses with a sentence naming
the file, and nothing changes. Unreadable is tested twice: a folder in place of the file (works as
root), and file permissions checked by a process that is not root.
"""

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
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coiled_jupyter import session
from coiled_jupyter.errors import CoiledJupyterError, ConfigFileError
from coiled_jupyter.settings import SESSION, config_layer, effective_settings

RESTRICTIVE = textwrap.dedent("""\
    coiled:
      backend-options:
        ingress:
          - ports: [8786]
            cidr: 10.1.0.0/16
    """)


def no_account():
    return None


def assert_refused_naming(path: Path, call) -> str:
    with pytest.raises(ConfigFileError) as caught:
        call()
    message = str(caught.value)
    assert str(path) in message
    assert "\n" not in message
    return message


def test_a_folder_in_place_of_coiled_yaml_is_refused_not_skipped(dask_config):
    folder = dask_config / "coiled.yaml"
    folder.mkdir()
    message = assert_refused_naming(folder, config_layer)
    assert "is a directory" in message
    assert_refused_naming(folder, lambda: effective_settings(account=no_account))


def test_an_unparsable_file_is_a_sentence_not_a_value_error_traceback(dask_config):
    path = dask_config / "coiled.yaml"
    path.write_text("coiled:\n  backend-options:\n    ingress: [\n")
    message = assert_refused_naming(path, lambda: effective_settings(account=no_account))
    assert "could not be read at line" in message


@pytest.mark.parametrize(
    "text, problem",
    [
        (
            "coiled:\n  backend-options:\n    ingress:\n      - ports: [0022]\n        cidr: x\n",
            "leading zero",
        ),
        ("coiled:\n  use_scheduler_public_ip: true\n  use-scheduler-public-ip: false\n", "twice"),
        ("coiled: 1\ncoiled: 2\n", "twice"),
        ("- just\n- a list\n", "mapping at the top"),
    ],
)
def test_our_keys_in_a_file_are_read_strictly(dask_config, text, problem):
    path = dask_config / "coiled.yaml"
    path.write_text(text)
    assert problem in assert_refused_naming(path, config_layer)


def test_other_tools_keys_may_use_anchors_and_yaml_1_1(dask_config):
    (dask_config / "coiled.yaml").write_text(
        RESTRICTIVE + "distributed:\n  a: &x {b: on}\n  c: *x\n  d: 0022\n"
    )
    layer = config_layer()
    assert [str(r) for r in layer.ingress] == ["tcp 8786 from 10.1.0.0/16"]


def test_anchors_inside_our_keys_are_refused(dask_config):
    path = dask_config / "coiled.yaml"
    path.write_text(
        "rules: &r [{ports: [8786], cidr: 10.1.0.0/16}]\n"
        "coiled:\n  backend-options:\n    ingress: *r\n"
    )
    assert "alias" in assert_refused_naming(path, config_layer)


def test_a_refused_file_changes_no_session(dask_config):
    session.set_settings([{"ports": [9000], "cidr": "10.9.0.0/16"}])
    before = SESSION.values
    mirrored = json.dumps(dask.config.config.get("coiled"), sort_keys=True)
    (dask_config / "coiled.yaml").mkdir()
    with pytest.raises(ConfigFileError):
        session.set_settings([{"ports": [22], "cidr": "0.0.0.0/0"}])
    with pytest.raises(ConfigFileError):
        session.reset()
    assert SESSION.values == before
    assert json.dumps(dask.config.config.get("coiled"), sort_keys=True) == mirrored
    shutil.rmtree(dask_config / "coiled.yaml")


def test_an_oversized_file_is_refused(dask_config):
    path = dask_config / "big.yaml"
    path.write_text("# padding\n" * 200_000)
    assert "KiB" in assert_refused_naming(path, config_layer)


def test_the_settings_view_refuses_with_the_same_sentence(dask_config, sandbox):
    folder = dask_config / "coiled.yaml"
    folder.mkdir()
    with pytest.raises(CoiledJupyterError) as caught:
        session.show(reach=False)
    assert str(folder) in str(caught.value)
    with pytest.raises(CoiledJupyterError):
        session.plan()


# Imports first (Python itself lives under /root here), then file access as user nobody: dropping
# the effective uid from 0 also drops the capability to read any file. Dask's search path is this
# test's folder alone: the checkout (and its venv's etc/dask) may sit in a folder only root may enter,
# which nobody would then rightly report first.
_AS_NOBODY = textwrap.dedent("""\
    import json, os
    import dask.config
    from coiled_jupyter.errors import CoiledJupyterError
    from coiled_jupyter.settings import config_layer
    from coiled_jupyter import strict_yaml
    strict_yaml._loader_class()
    dask.config.paths = [os.environ["DASK_CONFIG"]]
    os.setegid(65534)
    os.seteuid(65534)
    try:
        layer = config_layer()
        print(json.dumps({"ok": [str(r) for r in layer.ingress or []]}))
    except CoiledJupyterError as error:
        print(json.dumps({"refused": str(error)}))
    """)


@pytest.mark.skipif(os.geteuid() != 0, reason="switching to another user needs root")
@pytest.mark.parametrize("what", ["file", "folder"])
def test_a_file_the_kernel_may_not_read_is_refused(what):
    """Root reads every file, so the check runs in a process that dropped to user nobody."""
    folder = Path(tempfile.mkdtemp(prefix="coiled-jupyter-perm-"))
    try:
        os.chmod(folder, 0o755)
        config = folder / "dask"
        config.mkdir()
        path = config / "coiled.yaml"
        path.write_text(RESTRICTIVE)
        os.chmod(path, 0o000 if what == "file" else 0o644)
        os.chmod(config, 0o755 if what == "file" else 0o300)
        env = {**os.environ, "DASK_CONFIG": str(config), "HOME": str(folder)}
        result = subprocess.run(
            [sys.executable, "-c", _AS_NOBODY],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        answer = json.loads(result.stdout)
        assert "refused" in answer, answer
        assert "permission denied" in answer["refused"]
        assert str(path if what == "file" else config) in answer["refused"]
    finally:
        os.chmod(folder / "dask", 0o755)
        shutil.rmtree(folder)


_FILE_TEXT = st.text(
    alphabet=st.sampled_from(list("[]{},:-&*!|>'\"#%@ \n\t0123456789abcxyz./_") + ["\x07"]),
    max_size=300,
)


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(text=st.one_of(_FILE_TEXT, st.text(max_size=200)))
def test_any_file_content_is_a_layer_or_one_sentence_naming_the_file(dask_config, text):
    path = dask_config / "coiled.yaml"
    path.write_text("coiled:\n  backend-options:\n    ingress:\n" + text, encoding="utf-8")
    try:
        config_layer()
    except ConfigFileError as error:
        assert str(path) in str(error) and "\n" not in str(error)
