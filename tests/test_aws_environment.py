"""The AWS client follows the kernel's environment, and credentials never show.

Two moto servers on loopback, each in its own process (so each has its own state), stand in for two
AWS accounts. A change of endpoint, profile or keys inside a running kernel must take effect at the
next call: on the old code the cached client kept signing as, and writing to, the first account.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request

import dask.config
import pytest

from coiled_jupyter import session
from coiled_jupyter.provision import aws
from coiled_jupyter.provision.account import set_backend_options
from coiled_jupyter.provision.target import target

KEYS = {
    "a": ("AKIAACCOUNTAAAAAAAAA", "secret-of-account-a"),
    "b": ("AKIAACCOUNTBBBBBBBBB", "b-secret"),
}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def two_accounts():
    """Two moto servers on 127.0.0.1, started and stopped here."""
    processes, urls = [], []
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        for _ in range(2):
            port = _free_port()
            processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
            urls.append(f"http://127.0.0.1:{port}")
        for url in urls:
            deadline = time.monotonic() + 30
            while True:
                try:
                    opener.open(f"{url}/moto-api/", timeout=1).close()
                    break
                except OSError:
                    assert time.monotonic() < deadline, "a moto server did not start"
                    time.sleep(0.1)
        yield dict(zip("ab", urls))
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=10)


@pytest.fixture
def aws_environment(two_accounts, monkeypatch, tmp_path, dask_config):
    """The ``aws`` backend, no AWS variables but the ones a test sets, files of its own."""
    import os

    for name in [n for n in os.environ if n.upper().startswith("AWS_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "aws-credentials"))
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    for url in two_accounts.values():
        urllib.request.build_opener(urllib.request.ProxyHandler({})).open(
            urllib.request.Request(f"{url}/moto-api/reset", method="POST")
        ).close()
    with dask.config.set({"coiled-jupyter.backend": "aws", "coiled-jupyter.region": "us-east-1"}):
        yield two_accounts


def groups_of(url: str, cluster: str) -> list[dict]:
    import boto3

    ec2 = boto3.session.Session().client(
        "ec2",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="reader",
        aws_secret_access_key="reader",
    )
    return ec2.describe_security_groups(
        Filters=[{"Name": "tag:coiled-jupyter:cluster", "Values": [cluster]}]
    )["SecurityGroups"]


def use_keys(monkeypatch, account: str) -> None:
    key_id, secret = KEYS[account]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)


def test_a_new_endpoint_takes_effect_at_the_next_call(aws_environment, monkeypatch):
    use_keys(monkeypatch, "a")
    monkeypatch.setenv("AWS_ENDPOINT_URL", aws_environment["a"])
    assert session.apply("two-accounts").changed
    monkeypatch.setenv("AWS_ENDPOINT_URL", aws_environment["b"])
    use_keys(monkeypatch, "b")
    assert session.apply("two-accounts").changed
    assert len(groups_of(aws_environment["a"], "two-accounts")) == 1
    assert len(groups_of(aws_environment["b"], "two-accounts")) == 1


def test_a_new_profile_takes_effect_at_the_next_call(aws_environment, monkeypatch, tmp_path):
    (tmp_path / "aws-config").write_text(
        "".join(
            f"[profile {name}]\nregion = us-east-1\nendpoint_url = {url}\n"
            for name, url in aws_environment.items()
        )
    )
    (tmp_path / "aws-credentials").write_text(
        "".join(
            f"[{name}]\naws_access_key_id = {KEYS[name][0]}\n"
            f"aws_secret_access_key = {KEYS[name][1]}\n"
            for name in aws_environment
        )
    )
    monkeypatch.setenv("AWS_PROFILE", "a")
    session.apply("by-profile")
    monkeypatch.setenv("AWS_PROFILE", "b")
    session.apply("by-profile")
    assert len(groups_of(aws_environment["b"], "by-profile")) == 1


def test_new_keys_sign_the_next_call(aws_environment, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", aws_environment["a"])
    use_keys(monkeypatch, "a")
    session.describe("signed")
    use_keys(monkeypatch, "b")
    signed: list[str] = []
    ec2 = aws.client("ec2", target().connection())

    def record(request, **_):
        signed.append(
            request.headers["Authorization"].decode()
            if isinstance(request.headers["Authorization"], bytes)
            else request.headers["Authorization"]
        )

    ec2.meta.events.register("before-send", record)
    try:
        session.describe("signed")
    finally:
        ec2.meta.events.unregister("before-send", record)
    assert signed and all(f"Credential={KEYS['b'][0]}/" in header for header in signed)


def test_the_cache_keeps_no_secret_in_its_keys(aws_environment, monkeypatch):
    use_keys(monkeypatch, "a")
    monkeypatch.setenv("AWS_ENDPOINT_URL", aws_environment["a"])
    session.describe("cache")
    text = repr(list(aws._clients))
    assert KEYS["a"][1] not in text and KEYS["a"][0] not in text


def test_connections_and_secrets_hide_credentials():
    connection = aws.Connection(region="us-east-1", access_key_id="AKIAX", secret_access_key="s3")
    assert "AKIAX" not in repr(connection) and "s3" not in repr(connection)
    assert repr(connection.secret_access_key) == "Secret('***')"
    assert str(connection.access_key_id) == "Secret('***')"
    assert connection == aws.Connection(
        region="us-east-1", access_key_id="AKIAX", secret_access_key="s3"
    )


def test_a_verbose_traceback_does_not_show_the_keys(sandbox):
    """``%xmode Verbose`` prints every frame's arguments and locals."""
    from IPython.core.ultratb import VerboseTB

    key_id, secret = KEYS["a"]
    with pytest.raises(Exception) as caught:
        set_backend_options(  # refused for its port 0, after the keys were taken
            ingress=[{"ports": [0], "cidr": "10.0.0.0/8"}],
            aws_access_key_id=key_id,
            aws_secret_access_key=secret,
        )
    # From the call on: this test's own frame holds the keys as its locals.
    text = VerboseTB(theme_name="nocolor").text(caught.type, caught.value, caught.tb.tb_next)
    assert "set_backend_options" in text
    assert key_id not in text and secret not in text
