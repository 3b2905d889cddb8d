"""Shared fixtures: one real moto server per test session, reset between the tests that use it.

Tests reach AWS only through boto3 over HTTP to that server on 127.0.0.1. This machine's network rule
is loopback only, so the public-IP services are switched off here; tests that exercise them start
their own loopback HTTP server.
"""

from __future__ import annotations

import collections
import os
import tempfile
from pathlib import Path

import dask.config
import pytest

_STATE_DIR = Path(tempfile.mkdtemp(prefix="coiled-jupyter-tests-"))
_CONFIG_DIR = _STATE_DIR / "dask-config"
_CONFIG_DIR.mkdir()

# For this process (dask read its environment at import) and for kernels the tests start.
TEST_CONFIG = {
    "coiled-jupyter.sandbox.state-dir": str(_STATE_DIR),
    "coiled-jupyter.public-ip.services": [],
    "coiled-jupyter.public-ip.services-ipv6": [],
    # The tests written before issue 18 judge a plain Dask cluster's ports (8786/8787); tests of the
    # kinds (tests/test_ports.py) set or drop the kind themselves.
    "coiled-jupyter.cluster-kind": "dask",
}
dask.config.set(TEST_CONFIG)
os.environ["DASK_COILED_JUPYTER__SANDBOX__STATE_DIR"] = str(_STATE_DIR)
os.environ["DASK_COILED_JUPYTER__PUBLIC_IP__SERVICES"] = "[]"
os.environ["DASK_COILED_JUPYTER__PUBLIC_IP__SERVICES_IPV6"] = "[]"
os.environ["DASK_COILED_JUPYTER__CLUSTER_KIND"] = "dask"
os.environ["DASK_CONFIG"] = str(_CONFIG_DIR)
for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
    os.environ.pop(name, None)


@pytest.fixture(scope="session")
def sandbox_server():
    """The shared sandbox (moto) server, started once for the whole test session."""
    from coiled_jupyter.provision import sandbox

    server = sandbox.ensure()
    yield server
    sandbox.stop()


@pytest.fixture
def sandbox(sandbox_server):
    """A clean sandbox for one test: every group and parameter from earlier tests is gone."""
    from coiled_jupyter.provision import sandbox as module

    module.reset()
    yield sandbox_server


def _without_coiled_variables(monkeypatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith("DASK_COILED__"):
            monkeypatch.delenv(name)


@pytest.fixture
def dask_config(monkeypatch, tmp_path) -> Path:
    """A real, empty Dask config folder and no DASK_COILED__ variables; no session left afterwards."""
    import copy

    from coiled_jupyter.settings import SESSION

    folder = tmp_path / "dask-config"
    folder.mkdir()
    monkeypatch.setenv("DASK_CONFIG", str(folder))
    _without_coiled_variables(monkeypatch)
    saved = copy.deepcopy(dask.config.config)
    yield folder
    # The test may have left a bad file or variable behind: reset against an empty folder.
    empty = tmp_path / "empty-dask-config"
    empty.mkdir(exist_ok=True)
    monkeypatch.setenv("DASK_CONFIG", str(empty))
    _without_coiled_variables(monkeypatch)
    SESSION.clear()
    dask.config.config.clear()
    dask.config.config.update(saved)


@pytest.fixture(scope="session")
def add_by_hand():
    """Authorize one TCP rule with boto3 directly, as someone in the AWS console would."""

    def add(ec2, group_id: str, port: int, cidr: str, description: str | None = None) -> None:
        described = {"Description": description} if description else {}
        ec2.authorize_security_group_ingress(
            GroupId=group_id,
            IpPermissions=[
                {
                    "IpProtocol": "tcp",
                    "FromPort": port,
                    "ToPort": port,
                    "IpRanges": [{"CidrIp": cidr, **described}],
                }
            ],
        )

    return add


@pytest.fixture(autouse=True)
def _fresh_session(monkeypatch):
    """Every test starts without a notebook-session layer, and knowing nothing of account defaults
    read or written by earlier tests (settings work takes them as this process last saw them)."""
    from coiled_jupyter.provision import account

    monkeypatch.setattr(account, "_known", {})
    yield
    from coiled_jupyter import ports
    from coiled_jupyter.settings import SESSION

    ports.forget()

    SESSION.clear()


@pytest.fixture
def api_calls(sandbox):
    """Count EC2 and SSM API calls (one per operation, not per retry) with botocore events."""
    from coiled_jupyter.provision import aws
    from coiled_jupyter.provision.target import target

    counts: collections.Counter = collections.Counter()

    def count(model, **_):
        counts[f"{model.service_model.service_name}:{model.name}"] += 1

    connection = target().connection()
    clients = [aws.client(service, connection) for service in ("ec2", "ssm")]
    for client in clients:
        client.meta.events.register("before-call", count)
    yield counts
    for client in clients:
        client.meta.events.unregister("before-call", count)


@pytest.fixture
def aws_backend_on_sandbox(sandbox, monkeypatch, tmp_path):
    """The ``aws`` backend with its endpoint redirected to the sandbox (``AWS_ENDPOINT_URL``), no
    instance metadata, and AWS config files of the test's own; no keys (the test gives them, in the
    environment or to the call). The clients made for it are dropped afterwards."""
    from coiled_jupyter.provision import aws

    monkeypatch.setenv("AWS_ENDPOINT_URL", sandbox.url)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "aws-credentials"))
    with dask.config.set({"coiled-jupyter.backend": "aws", "coiled-jupyter.region": "us-east-1"}):
        try:
            yield sandbox
        finally:
            with aws._clients_lock:
                for key in [k for k in aws._clients if k[2] is None]:
                    del aws._clients[key]


# --------------------------------------------------------------------------------------------------
# Reading the sandbox independently, and injecting faults moto never produces


@pytest.fixture(scope="session")
def _independent_clients(sandbox_server):
    import boto3

    def make(service):
        return boto3.client(
            service,
            endpoint_url=sandbox_server.url,
            region_name="us-east-1",
            aws_access_key_id="reader",
            aws_secret_access_key="reader",
        )

    return {"ec2": make("ec2"), "ssm": make("ssm")}


@pytest.fixture
def cloud(sandbox, _independent_clients):
    """boto3 clients of their own (``cloud.ec2``, ``cloud.ssm``) to the sandbox, to read back (or change
    by hand) what the code under test did, independently of its clients and parsing."""
    import types

    return types.SimpleNamespace(url=sandbox.url, **_independent_clients)


class _Body:
    """What botocore reads a response body from: ``stream()`` (``AWSResponse.content``) or ``read()``."""

    def __init__(self, data: bytes):
        self._data = data

    def stream(self, **_):
        yield self._data

    def read(self, *_):
        data, self._data = self._data, b""
        return data


class Faults:
    """Synthetic AWS answers from a botocore ``before-send`` handler on real clients.

    ``fail(operation, code, status=..., times=1, skip=0, message=None, before=None)`` makes the next
    ``times`` sends of ``operation`` (after letting ``skip`` through) answer with that AWS error code
    (and ``message``, or ``message(request)``); ``times=None`` means every send. ``before(request)``
    runs first, e.g. another writer changing the group. ``answer(operation, body, ...)`` answers with
    that body instead (a success AWS would send, or a proxy's HTML page); ``throw(operation, make)``
    raises ``make(request)`` where the HTTP client would fail (botocore's connection errors and
    time-outs, which it retries first); ``meanwhile(operation, before)`` only runs
    ``before(request)`` and sends the request. ``sent[operation]`` counts HTTP sends (each retry is
    one), ``log`` lists them in order.
    """

    def __init__(self):
        self.sent: collections.Counter = collections.Counter()
        self.log: list[str] = []
        self._rules: dict[str, list[dict]] = {}
        self._clients: list = []

    def watch(self, client) -> None:
        if client not in self._clients:
            client.meta.events.register("before-send", self._handler)
            self._clients.append(client)

    def fail(
        self,
        operation: str,
        code: str,
        *,
        status: int = 400,
        times: int | None = 1,
        skip: int = 0,
        message=None,
        before=None,
    ) -> None:
        def respond(request, service):
            said = message(request) if callable(message) else message or f"injected {code}"
            if service == "ec2":
                from xml.sax.saxutils import escape

                body = (
                    f"<Response><Errors><Error><Code>{code}</Code><Message>{escape(said)}"
                    "</Message></Error></Errors><RequestID>injected</RequestID></Response>"
                )
                return _response(request, status, "text/xml", body.encode())
            import json

            body = json.dumps({"__type": code, "message": said}).encode()
            return _response(request, status, "application/x-amz-json-1.1", body)

        self._add(operation, respond, times, skip, before)

    def answer(
        self,
        operation: str,
        body: bytes,
        *,
        status: int = 200,
        content_type: str = "text/xml",
        times: int | None = 1,
        skip: int = 0,
        before=None,
    ) -> None:
        self._add(
            operation,
            lambda request, _: _response(request, status, content_type, body),
            times,
            skip,
            before,
        )

    def throw(self, operation: str, make, *, times: int | None = 1, skip: int = 0) -> None:
        def respond(request, _service):
            raise make(request)

        self._add(operation, respond, times, skip)

    def meanwhile(self, operation: str, before, *, times: int | None = 1, skip: int = 0) -> None:
        self._add(operation, lambda _request, _service: None, times, skip, before)

    def _add(self, operation: str, respond, times, skip, before=None) -> None:
        """``respond(request, service)`` answers the matching sends: a response, or None to send."""
        rule = {"times": times, "skip": skip, "before": before, "respond": respond}
        self._rules.setdefault(operation, []).append(rule)

    def clear(self) -> None:
        self._rules.clear()

    def close(self) -> None:
        for client in self._clients:
            client.meta.events.unregister("before-send", self._handler)
        self._clients.clear()

    def _handler(self, request, event_name, **_):
        service, operation = event_name.split(".")[1:3]
        self.sent[operation] += 1
        self.log.append(operation)
        for rule in self._rules.get(operation, []):
            if rule["skip"]:
                rule["skip"] -= 1
                continue
            if rule["times"] is not None:
                if rule["times"] <= 0:
                    continue
                rule["times"] -= 1
            if rule["before"] is not None:
                rule["before"](request)
            return rule["respond"](request, service)
        return None


def _response(request, status: int, content_type: str, body: bytes):
    from botocore.awsrequest import AWSResponse

    return AWSResponse(request.url, status, {"Content-Type": content_type}, _Body(body))


@pytest.fixture
def make_faults():
    """``make_faults(*clients)``: a :class:`Faults` injector on those clients, removed after the test."""
    made: list[Faults] = []

    def make(*clients) -> Faults:
        injector = Faults()
        made.append(injector)
        for client in clients:
            injector.watch(client)
        return injector

    try:
        yield make
    finally:
        for injector in made:
            injector.close()


@pytest.fixture
def faults(sandbox, make_faults):
    """A :class:`Faults` injector on the core's cached EC2 and SSM clients for the sandbox."""
    from coiled_jupyter.provision import aws
    from coiled_jupyter.provision.target import target

    connection = target().connection()
    return make_faults(*(aws.client(service, connection) for service in ("ec2", "ssm")))


@pytest.fixture
def fresh_faults(sandbox, dask_config, make_faults):
    """A :class:`Faults` injector on EC2 and SSM clients made for this test alone, which the core
    uses meanwhile: faults that botocore retries (connection errors, time-outs) then spend the
    retry quota of these clients, not that of the session's shared ones."""
    from coiled_jupyter.provision import aws
    from coiled_jupyter.provision.target import target

    saved = dict(aws._clients)
    aws._clients.clear()
    try:
        connection = target().connection()
        yield make_faults(*(aws.client(service, connection) for service in ("ec2", "ssm")))
    finally:
        aws._clients.clear()
        aws._clients.update(saved)


@pytest.fixture(scope="session")
def _image_id(_independent_clients):
    ec2 = _independent_clients["ec2"]
    # moto knows ~1300 images and lists them all in ~1 s; a filter answers at once.
    images = ec2.describe_images(
        Owners=["amazon"], Filters=[{"Name": "name", "Values": ["amzn2-ami-hvm-*"]}]
    )["Images"]
    return (images or ec2.describe_images(Owners=["amazon"])["Images"])[0]["ImageId"]


@pytest.fixture(scope="session")
def launch(_independent_clients, _image_id):
    """``launch(group_id, name, subnet=None)``: run one instance in the sandbox with that security group
    and Name tag (e.g. ``'<cluster>-scheduler'``), and return it as ``describe_instances`` reports it."""
    ec2 = _independent_clients["ec2"]

    def run(group_id: str, name: str, subnet: str | None = None) -> dict:
        kwargs = {
            "ImageId": _image_id,
            "MinCount": 1,
            "MaxCount": 1,
            "SecurityGroupIds": [group_id],
            "TagSpecifications": [
                {"ResourceType": "instance", "Tags": [{"Key": "Name", "Value": name}]}
            ],
        }
        if subnet:
            kwargs["SubnetId"] = subnet
        instance_id = ec2.run_instances(**kwargs)["Instances"][0]["InstanceId"]
        return ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]

    return run


# --------------------------------------------------------------------------------------------------
# An IPython shell with the extension loaded, for the magics, the panel and the hostile-input tests


@pytest.fixture(scope="module")
def shell():
    from IPython.testing.globalipapp import get_ipython

    return get_ipython()


@pytest.fixture
def ip(shell):
    """The shell with the extension loaded, unloaded again afterwards (with its %config)."""
    shell.run_line_magic("load_ext", "coiled_jupyter")
    yield shell
    if "coiled_jupyter" in shell.extension_manager.loaded:
        shell.run_line_magic("unload_ext", "coiled_jupyter")
    shell.config.pop("CoiledMagics", None)
