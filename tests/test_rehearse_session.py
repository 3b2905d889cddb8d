"""``rehearse`` through the session and the magic: the live probe, where a rehearsal cannot run, and
what the result shows. The live probe connects only to loopback here."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import sys

import pytest

from coiled_jupyter import session
from coiled_jupyter.errors import CoiledJupyterError
from coiled_jupyter.rehearsal.result import RehearsalResult, Row
from coiled_jupyter.rules import IngressError


@pytest.fixture
def listener():
    """A TCP port on loopback that accepts (the scheduler's stand-in), and one where nothing listens."""
    with socket.socket() as server, socket.socket() as closed:
        server.bind(("127.0.0.1", 0))
        server.listen()
        closed.bind(("127.0.0.1", 0))  # bound, never listening: a connect is refused
        yield server.getsockname()[1], closed.getsockname()[1]


def rows(result) -> dict[str, tuple[str, str]]:
    return {
        r["port"].split()[1]: (r["predicted"], r["measured"]) for r in result.to_payload()["rows"]
    }


def rehearse_live(admitted: int, open_port: int, closed_port: int):
    """Admit loopback on ``admitted``, apply, and rehearse live against 127.0.0.1."""
    session.set_settings([{"ports": [admitted], "cidr": "127.0.0.1/32"}], cluster="live")
    session.set_scheduler_ip("private", cluster="live")
    session.apply("live")
    return session.rehearse(
        "live", live=True, host="127.0.0.1", scheduler_port=open_port, dashboard_port=closed_port
    )


def test_live_compares_a_real_connect_with_the_prediction(sandbox, dask_config, listener):
    open_port, closed_port = listener
    result = rehearse_live(open_port, open_port, closed_port)
    assert rows(result) == {"(scheduler)": ("yes", "yes"), "(dashboard)": ("no", "no")}
    payload = result.to_payload()
    assert payload["live"] is True and payload["notes"] == []
    assert "Connection refused" in payload["rows"][1]["detail"]


def test_live_explains_a_difference(sandbox, dask_config, listener):
    open_port, closed_port = listener
    result = rehearse_live(closed_port, open_port, closed_port)
    assert rows(result) == {"(scheduler)": ("no", "yes"), "(dashboard)": ("yes", "no")}
    notes = result.to_payload()["notes"]
    assert notes[0].startswith(f"port {open_port} (scheduler) at 127.0.0.1: connected although")
    assert notes[1].startswith(f"port {closed_port} (dashboard) at 127.0.0.1: the rules admit")
    assert "nothing listens on that port" in notes[1]
    html = result._repr_mimebundle_()["text/html"]
    assert html.count('<tr class="cj-disagree">') == 2


def test_bad_input_is_one_sentence_and_changes_nothing(sandbox, dask_config):
    with pytest.raises(IngressError, match="the scheduler port is a number from 1 to 65535"):
        session.rehearse("x", scheduler_port=0)
    with pytest.raises(IngressError, match="the host is an IP address, not 'example.org'"):
        session.rehearse("x", live=True, host="example.org")
    with pytest.raises(CoiledJupyterError, match="has no security group yet \\(sandbox"):
        session.rehearse("never-applied", live=True, host="127.0.0.1")


def test_stop_when_nothing_runs(dask_config):
    result = session.rehearse("x", stop=True)
    assert result.to_payload()["summary"] == "no rehearsal was running in this process"


def test_the_result_escapes_what_came_from_outside():
    from coiled_jupyter.provision.target import target

    row = Row(
        "<b>evil</b>", "10.0.0.1", "scheduler", 8786, "yes", "r", "no", 0.5, "<i>x</i>", "TCP"
    )
    html = RehearsalResult(target("x"), "s", (row,))._repr_mimebundle_()["text/html"]
    assert "<b>evil</b>" not in html and "&lt;b&gt;evil&lt;/b&gt;" in html
    assert "<i>x</i>" not in html
    assert "var(--jp-error-color0" in html


def test_the_magic_rehearses_stops_and_refuses_other_options(ip, dask_config):
    from IPython.core.error import UsageError

    ip.run_line_magic("load_ext", "coiled_jupyter")
    result = ip.run_line_magic("coiled_ingress", "rehearse --stop")
    assert isinstance(result, RehearsalResult)
    with pytest.raises(UsageError, match="does not take --scope; it is for save"):
        ip.run_line_magic("coiled_ingress", "rehearse --scope user")
    with pytest.raises(UsageError, match="does not take --live; it is for rehearse"):
        ip.run_line_magic("coiled_ingress", "plan --live")


NOBODY = """
import json
from coiled_jupyter import session
result = session.rehearse("unprivileged")
print(json.dumps(result.to_payload()))
"""


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root")
def test_where_it_cannot_run_one_sentence_says_why(tmp_path):
    """As an ordinary user (no root), the rehearsal says why in one sentence and reads nothing."""
    nobody = pwd.getpwnam("nobody")
    env = {
        **os.environ,
        "HOME": str(tmp_path),
        "DASK_COILED_JUPYTER__SANDBOX__STATE_DIR": str(tmp_path / "state"),
        "DASK_CONFIG": str(tmp_path / "dask"),
    }
    os.chmod(tmp_path, 0o777)
    done = subprocess.run(
        [
            "setpriv",
            f"--reuid={nobody.pw_uid}",
            f"--regid={nobody.pw_gid}",
            "--clear-groups",
            sys.executable,
            "-c",
            NOBODY,
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    import json

    payload = json.loads(done.stdout)
    assert payload["rows"] == []
    assert payload["summary"].startswith("a rehearsal creates network namespaces, which needs root")
    # Nothing was read or started: no sandbox state was written by this process.
    assert not (tmp_path / "state").exists() or not any((tmp_path / "state").iterdir())


def test_the_cell_refuses_the_rehearsal_options(ip, dask_config):
    from IPython.core.error import UsageError

    ip.run_line_magic("load_ext", "coiled_jupyter")
    with pytest.raises(UsageError, match="rehearse on a line: %coiled_ingress rehearse --live"):
        ip.run_cell_magic("coiled_ingress", "--live", "- ports: [8786]\n  cidr: 10.1.0.0/16\n")
