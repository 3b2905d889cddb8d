"""The sandbox: one moto server per machine, found by every process through its state file.

Tests that start or stop a server use a state folder of their own, so that the session's shared server
(``sandbox_server``) is never stopped by them; each stops what it started.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import urllib.request
from pathlib import Path

import dask.config
import psutil
import pytest

from coiled_jupyter import session
from coiled_jupyter.provision import reconcile
from coiled_jupyter.provision import sandbox as sandbox_module
from coiled_jupyter.provision.target import target
from coiled_jupyter.settings import effective_settings

PACKAGE_ROOT = str(Path(reconcile.__file__).parents[2])


def _python(code: str, state_dir: str | None = None, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": PACKAGE_ROOT}
    if state_dir is not None:
        env["DASK_COILED_JUPYTER__SANDBOX__STATE_DIR"] = state_dir
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def _run(code: str, state_dir: str | None = None) -> str:
    proc = _python(code, state_dir)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    return out.strip()


def _moto_processes(state_dir: Path) -> list[psutil.Process]:
    """moto servers started for ``state_dir`` (they inherit its environment variable)."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if "moto.server" not in " ".join(proc.info["cmdline"] or []):
                continue
            env = proc.environ()
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        if env.get("DASK_COILED_JUPYTER__SANDBOX__STATE_DIR") == str(state_dir):
            found.append(proc)
    return found


@pytest.fixture
def own_state_dir(tmp_path):
    """A state folder of this test's own; whatever server is started for it is stopped at the end."""
    folder = tmp_path / "state"
    with dask.config.set({"coiled-jupyter.sandbox.state-dir": str(folder)}):
        try:
            yield folder
        finally:
            sandbox_module.stop()


# --------------------------------------------------------------------------------------------------
# Sharing


def test_a_second_process_finds_the_shared_server(sandbox):
    code = """
        from coiled_jupyter.provision import sandbox
        server = sandbox.running()
        print(server.url if server else None)
        print(sandbox.ensure().url)
    """
    assert _run(code).splitlines() == [sandbox.url, sandbox.url]


def test_a_second_process_sees_the_same_groups(sandbox, cloud):
    reconcile.apply(
        target("shared"),
        effective_settings(
            {"ingress": [{"ports": [8786], "cidr": "10.1.0.0/16"}]}, account=lambda: None
        ),
    )
    gid = cloud.ec2.describe_security_groups(
        Filters=[{"Name": "group-name", "Values": ["coiled-jupyter-shared"]}]
    )["SecurityGroups"][0]["GroupId"]
    code = """
        from coiled_jupyter.provision import reconcile
        from coiled_jupyter import session
        from coiled_jupyter.provision import account
        from coiled_jupyter.provision.target import target
        from coiled_jupyter.settings import effective_settings
        table = reconcile.describe(target('shared'), effective_settings({}, account=lambda: None))
        print(table.group_id, *sorted(r.source for r in table.rules))
    """
    assert _run(code).split() == [gid, "10.1.0.0/16", gid]


def test_the_status_command_reports_the_shared_server(sandbox):
    out = _run("from coiled_jupyter.provision import sandbox; sandbox.main(['status'])")
    assert out.startswith(f"sandbox running at {sandbox.url}")


def test_reset_forgets_every_group_and_parameter(sandbox, cloud):
    cloud.ec2.create_security_group(GroupName="to-forget", Description="x")
    cloud.ssm.put_parameter(Name="/to/forget", Value="x", Type="String")
    sandbox_module.reset()
    names = {g["GroupName"] for g in cloud.ec2.describe_security_groups()["SecurityGroups"]}
    assert "to-forget" not in names
    assert cloud.ssm.describe_parameters()["Parameters"] == []


# --------------------------------------------------------------------------------------------------
# Start and stop, in a state folder of the test's own


def test_start_use_and_stop_a_server_of_our_own(sandbox_server, own_state_dir):
    assert sandbox_module.running() is None
    server = sandbox_module.ensure()
    try:
        assert server.url != sandbox_server.url
        assert sandbox_module.running() == server
        state = json.loads((own_state_dir / "sandbox.json").read_text())
        assert (state["pid"], state["port"], state["ready"]) == (server.pid, server.port, True)
        assert sandbox_module.ensure() == server  # a second call starts nothing
        assert target("own").endpoint_url is None  # resolving a target starts nothing
        t = target("own").connected()
        assert t.endpoint_url == server.url and t.backend == "sandbox"
        result = reconcile.apply(
            target("own"),
            effective_settings(
                {"ingress": [{"ports": [8786], "cidr": "10.1.0.0/16"}]}, account=lambda: None
            ),
        )
        assert result.table.exists
    finally:
        assert sandbox_module.stop() is True
    assert sandbox_module.running() is None
    assert not (own_state_dir / "sandbox.json").exists()
    assert not psutil.pid_exists(server.pid) or psutil.Process(server.pid).status() == "zombie"
    with pytest.raises(OSError):
        urllib.request.urlopen(f"{server.url}/moto-api/", timeout=2)
    assert sandbox_module.stop() is False
    # the session's shared server was not touched
    with urllib.request.urlopen(f"{sandbox_server.url}/moto-api/", timeout=5) as response:
        assert response.status == 200


def test_a_stale_state_file_is_replaced_by_a_fresh_start(own_state_dir):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    own_state_dir.mkdir(parents=True)
    free = sandbox_module._free_port()
    (own_state_dir / "sandbox.json").write_text(json.dumps({"pid": dead.pid, "port": free}))
    assert sandbox_module.running() is None

    server = sandbox_module.ensure()

    assert server.pid != dead.pid
    state = json.loads((own_state_dir / "sandbox.json").read_text())
    assert (state["pid"], state["port"]) == (server.pid, server.port)
    assert sandbox_module.running() == server


@pytest.mark.parametrize("content", ["", "not json", "{}", '{"pid": "x", "port": 1}', "[1, 2]"])
def test_an_unreadable_state_file_means_no_server(own_state_dir, content):
    own_state_dir.mkdir(parents=True)
    (own_state_dir / "sandbox.json").write_text(content)
    assert sandbox_module.running() is None


def test_two_processes_ensuring_at_once_end_with_one_server(own_state_dir):
    own_state_dir.mkdir(parents=True)
    go = own_state_dir.parent / "go"
    code = f"""
        import time
        from pathlib import Path
        from coiled_jupyter.provision import sandbox
        while not Path({str(go)!r}).exists():
            time.sleep(0.002)
        server = sandbox.ensure()
        print(server.pid, server.url)
    """
    procs = [_python(code, str(own_state_dir)) for _ in range(2)]
    try:
        go.touch()
        outputs = []
        for proc in procs:
            out, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err
            outputs.append(out.strip())
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert outputs[0] == outputs[1]
    pid = int(outputs[0].split()[0])
    assert [p.pid for p in _moto_processes(own_state_dir)] == [pid]
    assert sandbox_module.running().pid == pid  # this process finds it too

    assert sandbox_module.stop()
    assert _moto_processes(own_state_dir) == []


def test_the_server_outlives_the_process_that_started_it(own_state_dir):
    out = _run(
        "from coiled_jupyter.provision import sandbox; print(sandbox.ensure().pid)",
        str(own_state_dir),
    )
    server = sandbox_module.running()
    assert server is not None and server.pid == int(out)


# --------------------------------------------------------------------------------------------------
# Every table says it is the sandbox


def test_every_table_of_the_sandbox_says_sandbox_and_not_aws(cloud, launch):
    from coiled_jupyter import session

    wanted = effective_settings(
        {"ingress": [{"ports": [8786], "cidr": "10.1.0.0/16"}]}, account=lambda: None
    )
    results = [
        reconcile.plan(target("labelled"), wanted),
        reconcile.apply(target("labelled"), wanted),
        reconcile.describe(target("labelled"), wanted),
    ]
    gid = results[-1].group_id
    launch(gid, "labelled-scheduler")
    session.set_scheduler_ip(True)
    results += [
        reconcile.scheduler_address(target("labelled"), wanted),
        session.show("labelled", reach=False),
        session.destroy("labelled"),
    ]
    for result in results:
        bundle = result._repr_mimebundle_()
        for mime in ("text/plain", "text/html"):
            assert "sandbox" in bundle[mime], (type(result).__name__, mime)
            assert "not AWS" in bundle[mime], (type(result).__name__, mime)
        assert bundle["application/vnd.coiled-jupyter.rules+json"]["backend"] == "sandbox"


def test_a_proxy_in_the_environment_does_not_carry_sandbox_calls_away(sandbox, monkeypatch):
    from coiled_jupyter.provision import aws

    dead = "http://127.0.0.1:9"  # nothing listens on the discard port: a proxied call would fail
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.setenv(name, dead)
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    cached = dict(aws._clients)
    aws._clients.clear()  # clients read the environment's proxies when they are created
    try:
        assert sandbox_module.running() == sandbox
        options = {"ingress": [{"ports": [8786], "cidr": "10.1.0.0/16"}]}
        first = session.apply("proxied", backend_options=options)
        assert ("tcp", 8786, 8786, "10.1.0.0/16") in {r.key for r in first.table.rules}
        assert not session.apply("proxied", backend_options=options).changed
    finally:
        aws._clients.clear()
        aws._clients.update(cached)


def test_a_state_file_naming_another_process_is_not_trusted(sandbox, tmp_path):
    """A recycled pid (here: this test's own process) must never be taken for the server."""
    with dask.config.set({"coiled-jupyter.sandbox.state-dir": str(tmp_path)}):
        (tmp_path / sandbox_module.STATE_FILE).write_text(
            json.dumps({"pid": os.getpid(), "port": sandbox.port})
        )
        assert sandbox_module.running() is None
        assert sandbox_module.stop() is False
    assert sandbox_module.running() == sandbox
