"""The boto3 client cache never hands one call's client to a call of other keys, profile, region or
endpoint.

moto accepts any key, so a call signed with the wrong keys would still succeed: each client is
checked by what it signs with (the ``Credential=`` of its Authorization header, captured at
botocore's ``before-send``), where it sends, and its region, never by the call's success.
"""

from __future__ import annotations

import pytest

from coiled_jupyter.provision import aws

KEY_A = ("AKIACACHEAAAAAAAAAAA", "cache-secret-a")
KEY_B = ("AKIACACHEBBBBBBBBBBB", "cache-secret-b")


@pytest.fixture
def connect(sandbox, monkeypatch, tmp_path):
    """``connect(**fields)``: a Connection to the sandbox with these fields; clients made from it are
    dropped afterwards. AWS config files of the test's own hold profiles ``p`` and ``q``."""
    (tmp_path / "config").write_text("[profile p]\nregion = us-east-1\n[profile q]\n")
    (tmp_path / "credentials").write_text(
        f"[p]\naws_access_key_id = {KEY_A[0]}\naws_secret_access_key = {KEY_A[1]}\n"
        f"[q]\naws_access_key_id = {KEY_B[0]}\naws_secret_access_key = {KEY_B[1]}\n"
    )
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    before = set(aws._clients)

    def make(**fields) -> aws.Connection:
        return aws.Connection(
            **{"region": "us-east-1", "endpoint_url": sandbox.url, "direct": True, **fields}
        )

    yield make
    with aws._clients_lock:
        for key in set(aws._clients) - before:
            del aws._clients[key]


def signed_with(client) -> str:
    """The access key id one real call of ``client`` signs with."""
    seen: list[str] = []

    def record(request, **_):
        header = request.headers["Authorization"]
        header = header.decode() if isinstance(header, bytes) else header
        seen.append(header.split("Credential=")[1].split("/")[0])

    client.meta.events.register("before-send", record)
    try:
        client.describe_security_groups()
    finally:
        client.meta.events.unregister("before-send", record)
    return seen[0]


def test_one_connection_reuses_its_client(connect):
    keys = {"access_key_id": KEY_A[0], "secret_access_key": KEY_A[1]}
    assert aws.client("ec2", connect(**keys)) is aws.client("ec2", connect(**keys))


def test_other_keys_get_a_client_that_signs_with_them(connect):
    first = aws.client("ec2", connect(access_key_id=KEY_A[0], secret_access_key=KEY_A[1]))
    second = aws.client("ec2", connect(access_key_id=KEY_B[0], secret_access_key=KEY_B[1]))
    assert first is not second
    assert (signed_with(first), signed_with(second)) == (KEY_A[0], KEY_B[0])


def test_another_secret_for_the_same_key_id_gets_its_own_client(connect):
    first = aws.client("ec2", connect(access_key_id=KEY_A[0], secret_access_key=KEY_A[1]))
    second = aws.client("ec2", connect(access_key_id=KEY_A[0], secret_access_key="other"))
    assert first is not second
    assert second._request_signer._credentials.secret_key == "other"


def test_another_profile_gets_a_client_that_signs_as_that_profile(connect):
    first = aws.client("ec2", connect(profile="p"))
    second = aws.client("ec2", connect(profile="q"))
    assert first is not second
    assert (signed_with(first), signed_with(second)) == (KEY_A[0], KEY_B[0])


def test_another_region_or_endpoint_gets_its_own_client(connect, sandbox):
    keys = {"access_key_id": KEY_A[0], "secret_access_key": KEY_A[1]}
    east = aws.client("ec2", connect(**keys))
    west = aws.client("ec2", connect(region="eu-west-1", **keys))
    other_end = aws.client("ec2", connect(endpoint_url=sandbox.url + "/", **keys))
    assert len({id(east), id(west), id(other_end)}) == 3
    assert (east.meta.region_name, west.meta.region_name) == ("us-east-1", "eu-west-1")
    assert other_end.meta.endpoint_url == sandbox.url + "/"


def test_a_new_key_in_the_environment_gets_a_client_that_signs_with_it(connect, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY_A[0])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", KEY_A[1])
    first = aws.client("ec2", connect())
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY_B[0])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", KEY_B[1])
    second = aws.client("ec2", connect())
    assert (signed_with(first), signed_with(second)) == (KEY_A[0], KEY_B[0])
