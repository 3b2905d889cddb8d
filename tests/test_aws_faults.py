"""Faults moto never produces, injected with a botocore ``before-send`` handler on the real clients
(``faults`` fixture): throttling, eventual consistency after create, runs cut off half-way, concurrent
writers, dependency violations, and credentials kept out of every error.

The handler answers with a synthetic EC2 XML error instead of sending; everything else goes over HTTP
to the sandbox, and the outcome is read back with a client of the test's own.
"""

from __future__ import annotations

import traceback

import pytest

from coiled_jupyter import session
from coiled_jupyter.errors import CloudError
from coiled_jupyter.provision import aws, reconcile
from coiled_jupyter.provision.target import target
from coiled_jupyter.settings import effective_settings

VPN = {"ports": [8786, 8787], "cidr": "10.1.0.0/16", "description": "VPN"}
PEERED = {"ports": [8786], "cidr": "10.2.0.0/16"}
OFFICE = {"ports": [8786], "cidr": "192.168.0.0/16"}

A = {("tcp", 8786, 8787, "10.1.0.0/16"), ("tcp", 8786, 8786, "10.2.0.0/16")}
B = {("tcp", 8786, 8787, "10.1.0.0/16"), ("tcp", 8786, 8786, "192.168.0.0/16")}
AUTHORIZE = "AuthorizeSecurityGroupIngress"
REVOKE = "RevokeSecurityGroupIngress"
DESCRIBE = "DescribeSecurityGroups"


def settings_for(ingress):
    return effective_settings({"ingress": ingress}, account=lambda: None)


def group(ec2, cluster: str) -> dict:
    found = ec2.describe_security_groups(
        Filters=[{"Name": "tag:coiled-jupyter:cluster", "Values": [cluster]}]
    )["SecurityGroups"]
    assert len(found) == 1, found
    return found[0]


def declared(ec2, cluster: str) -> set[tuple]:
    """The group's entries as the server holds them, without the self rule (which is checked)."""
    g = group(ec2, cluster)
    out = set()
    for p in g["IpPermissions"]:
        key = (p["IpProtocol"], p.get("FromPort"), p.get("ToPort"))
        out.update((*key, r["CidrIp"]) for r in p.get("IpRanges", []))
        out.update((*key, r["CidrIpv6"]) for r in p.get("Ipv6Ranges", []))
        out.update((*key, r["GroupId"]) for r in p.get("UserIdGroupPairs", []))
    self_entry = ("-1", None, None, g["GroupId"])
    assert self_entry in out
    return out - {self_entry}


def _as_permissions(entries: set[tuple]) -> list[dict]:
    return [
        {"IpProtocol": p, "FromPort": lo, "ToPort": hi, "IpRanges": [{"CidrIp": cidr}]}
        for p, lo, hi, cidr in entries
    ]


# --------------------------------------------------------------------------------------------------
# Retried faults


def test_throttling_once_is_retried_by_botocore(cloud, faults, api_calls):
    faults.fail(AUTHORIZE, "RequestLimitExceeded", status=503, times=1)

    result = reconcile.apply(target("throttled"), settings_for([VPN, PEERED]))

    assert result.changed
    assert faults.sent[AUTHORIZE] == 2  # one throttled send, one retry
    assert api_calls[f"ec2:{AUTHORIZE}"] == 1  # one operation
    assert declared(cloud.ec2, "throttled") == A


def test_throttling_with_http_400_is_retried_too(cloud, faults):
    faults.fail(DESCRIBE, "RequestLimitExceeded", status=400, times=1)
    reconcile.apply(target("throttled-400"), settings_for([VPN]))
    assert faults.sent[DESCRIBE] == 3  # find (throttled, retried), then the verifying read
    assert declared(cloud.ec2, "throttled-400") == {("tcp", 8786, 8787, "10.1.0.0/16")}


def test_not_found_right_after_create_is_retried(cloud, faults):
    faults.fail(AUTHORIZE, "InvalidGroup.NotFound", times=1)

    result = reconcile.apply(target("eventual"), settings_for([VPN, PEERED]))

    assert result.changed and result.plan.create
    assert faults.sent[AUTHORIZE] == 2
    assert declared(cloud.ec2, "eventual") == A


def test_a_fresh_apply_reports_what_the_verifying_read_finds(cloud, faults):
    """The table comes from the read after the writes, and agrees with the server."""
    result = reconcile.apply(target("eventual-read"), settings_for([VPN, PEERED]))

    assert faults.log == [DESCRIBE, "CreateSecurityGroup", AUTHORIZE, DESCRIBE]
    assert {
        (r.protocol, r.from_port, r.to_port, r.source)
        for r in result.table.rules
        if r.protocol == "tcp"
    } == A
    assert declared(cloud.ec2, "eventual-read") == A
    g = group(cloud.ec2, "eventual-read")
    assert result.table.group_id == g["GroupId"] and result.table.account_id == g["OwnerId"]
    assert {r.description for r in result.table.rules} == {"VPN", "", aws.SELF_DESCRIPTION}


def test_a_server_error_once_is_retried(cloud, faults):
    reconcile.apply(target("flaky"), settings_for([VPN, PEERED]))
    faults.sent.clear()
    faults.fail(REVOKE, "InternalError", status=500, times=1)

    reconcile.apply(target("flaky"), settings_for([VPN, OFFICE]))

    assert faults.sent[REVOKE] == 2
    assert declared(cloud.ec2, "flaky") == B


# --------------------------------------------------------------------------------------------------
# Runs cut off half-way are finished by the next run


def test_a_run_cut_off_after_authorize_is_finished_by_the_next(cloud, faults):
    reconcile.apply(target("cut"), settings_for([VPN, PEERED]))
    faults.fail(REVOKE, "UnauthorizedOperation", status=403, times=1)

    with pytest.raises(CloudError) as info:
        reconcile.apply(target("cut"), settings_for([VPN, OFFICE]))

    assert info.value.code == "UnauthorizedOperation"
    assert "UnauthorizedOperation" in str(info.value) and "permissions" in str(info.value)
    # added before removing: access never dropped below what is declared
    assert declared(cloud.ec2, "cut") == A | B

    planned = reconcile.plan(target("cut"), settings_for([VPN, OFFICE]))
    assert [r.source for r in planned.remove] == ["10.2.0.0/16"] and planned.add == ()
    finished = reconcile.apply(target("cut"), settings_for([VPN, OFFICE]))
    assert finished.changed
    assert declared(cloud.ec2, "cut") == B
    assert not reconcile.apply(target("cut"), settings_for([VPN, OFFICE])).changed


def test_a_run_cut_off_after_create_is_finished_by_the_next(cloud, faults):
    # Not a retried code: a 500 would be retried with up to 30 s of backoff first.
    faults.fail(AUTHORIZE, "UnauthorizedOperation", status=403, times=None)

    with pytest.raises(CloudError) as info:
        reconcile.apply(target("cut-create"), settings_for([VPN, PEERED]))

    assert info.value.code == "UnauthorizedOperation"
    assert faults.sent[AUTHORIZE] == 1
    g = group(cloud.ec2, "cut-create")
    assert g["IpPermissions"] == []
    faults.clear()

    planned = reconcile.plan(target("cut-create"), settings_for([VPN, PEERED]))
    assert not planned.create and len(planned.add) == 3  # the two rules and the self rule
    reconcile.apply(target("cut-create"), settings_for([VPN, PEERED]))
    assert declared(cloud.ec2, "cut-create") == A
    assert [g["GroupId"]] == [group(cloud.ec2, "cut-create")["GroupId"]]


def test_a_failed_find_changes_nothing(cloud, faults):
    reconcile.apply(target("unchanged"), settings_for([VPN, PEERED]))
    faults.sent.clear()
    faults.fail(DESCRIBE, "UnauthorizedOperation", status=403, times=1)
    with pytest.raises(CloudError, match="UnauthorizedOperation"):
        reconcile.apply(target("unchanged"), settings_for([OFFICE]))
    assert faults.sent[AUTHORIZE] == faults.sent[REVOKE] == 0
    assert declared(cloud.ec2, "unchanged") == A


# --------------------------------------------------------------------------------------------------
# Concurrent writers


def _another_writer(cloud, cluster: str, call: str, entries: set[tuple]):
    """A ``before`` hook: another writer changes the group just before our request arrives."""

    def act(_request):
        gid = group(cloud.ec2, cluster)["GroupId"]
        getattr(cloud.ec2, call)(GroupId=gid, IpPermissions=_as_permissions(entries))

    return act


def test_duplicate_on_authorize_from_a_concurrent_writer_is_success(cloud, faults):
    reconcile.apply(target("dup"), settings_for([VPN, PEERED]))
    faults.sent.clear()
    new = {("tcp", 8786, 8786, "192.168.0.0/16")}
    faults.fail(
        AUTHORIZE,
        "InvalidPermission.Duplicate",
        before=_another_writer(cloud, "dup", "authorize_security_group_ingress", new),
    )

    result = reconcile.apply(target("dup"), settings_for([VPN, OFFICE]))

    assert result.changed
    assert faults.sent[AUTHORIZE] == 1  # nothing was left to add
    assert declared(cloud.ec2, "dup") == B


def test_a_partial_duplicate_adds_only_the_rest(cloud, faults):
    reconcile.apply(target("dup-part"), settings_for([VPN]))
    faults.sent.clear()
    wanted = [VPN, PEERED, OFFICE]
    faults.fail(
        AUTHORIZE,
        "InvalidPermission.Duplicate",
        before=_another_writer(
            cloud,
            "dup-part",
            "authorize_security_group_ingress",
            {("tcp", 8786, 8786, "10.2.0.0/16")},
        ),
    )

    reconcile.apply(target("dup-part"), settings_for(wanted))

    assert faults.sent[AUTHORIZE] == 2
    assert declared(cloud.ec2, "dup-part") == A | B


def test_not_found_on_revoke_from_a_concurrent_writer_is_success(cloud, faults):
    reconcile.apply(target("gone"), settings_for([VPN, PEERED]))
    faults.sent.clear()
    old = {("tcp", 8786, 8786, "10.2.0.0/16")}
    faults.fail(
        REVOKE,
        "InvalidPermission.NotFound",
        before=_another_writer(cloud, "gone", "revoke_security_group_ingress", old),
    )

    reconcile.apply(target("gone"), settings_for([VPN, OFFICE]))

    assert faults.sent[REVOKE] == 1
    assert declared(cloud.ec2, "gone") == B


def _unknown_permissions(entries: set[tuple]) -> bytes:
    """AWS's answer to a revoke, in the default VPC, of rules it does not know: success, with them
    listed as ``UnknownIpPermissions``."""
    items = "".join(
        f"<item><ipProtocol>{p}</ipProtocol><fromPort>{lo}</fromPort><toPort>{hi}</toPort>"
        f"<ipRanges><item><cidrIp>{cidr}</cidrIp></item></ipRanges></item>"
        for p, lo, hi, cidr in sorted(entries)
    )
    return (
        '<RevokeSecurityGroupIngressResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">'
        "<requestId>injected</requestId><return>true</return>"
        f"<unknownIpPermissionSet>{items}</unknownIpPermissionSet>"
        "</RevokeSecurityGroupIngressResponse>"
    ).encode()


def test_a_removal_answered_as_unknown_is_not_reported_as_made(cloud, faults):
    """The revoke never reaches the group; AWS's answer says success with the rule unknown (as
    the default VPC does for a rule spelled otherwise than it holds it)."""
    reconcile.apply(target("unknown"), settings_for([VPN, PEERED]))
    old = {("tcp", 8786, 8786, "10.2.0.0/16")}
    faults.answer(REVOKE, _unknown_permissions(old), times=None)

    with pytest.raises(CloudError) as info:
        reconcile.apply(target("unknown"), settings_for([VPN, OFFICE]))

    said = str(info.value)
    assert info.value.code == "UnknownIpPermissions"
    assert "10.2.0.0/16" in said and "not removed" in said
    assert "wider than either" in said  # the new rule was added beside it
    assert declared(cloud.ec2, "unknown") == A | B
    faults.clear()
    assert reconcile.apply(target("unknown"), settings_for([VPN, OFFICE])).changed
    assert declared(cloud.ec2, "unknown") == B


def test_a_removal_answered_as_unknown_because_another_writer_made_it_is_done(cloud, faults):
    reconcile.apply(target("unknown-gone"), settings_for([VPN, PEERED]))
    old = {("tcp", 8786, 8786, "10.2.0.0/16")}
    faults.answer(
        REVOKE,
        _unknown_permissions(old),
        before=_another_writer(cloud, "unknown-gone", "revoke_security_group_ingress", old),
    )

    result = reconcile.apply(target("unknown-gone"), settings_for([VPN, OFFICE]))

    assert result.changed
    assert faults.sent[REVOKE] == 1  # the read found it gone: nothing left to remove
    assert declared(cloud.ec2, "unknown-gone") == B


def test_a_rule_added_by_another_writer_during_the_apply_is_said_not_hidden(cloud, faults):
    """The verifying read after the writes finds a rule this apply did not write."""
    reconcile.apply(target("meanwhile"), settings_for([VPN, PEERED]))
    other = {("tcp", 8786, 8786, "172.16.0.0/12")}
    faults.meanwhile(
        REVOKE, _another_writer(cloud, "meanwhile", "authorize_security_group_ingress", other)
    )

    with pytest.raises(CloudError) as info:
        reconcile.apply(target("meanwhile"), settings_for([VPN, OFFICE]))

    said = str(info.value)
    assert info.value.code == "ConcurrentChange"
    assert "another writer changed group" in said
    assert "172.16.0.0/12" in said and "admits more" in said
    assert declared(cloud.ec2, "meanwhile") == B | other  # said as it is, not changed further


def test_a_duplicate_that_never_resolves_is_an_error_not_a_loop(cloud, faults):
    reconcile.apply(target("stuck"), settings_for([VPN]))
    faults.sent.clear()
    faults.fail(AUTHORIZE, "InvalidPermission.Duplicate", times=None)

    with pytest.raises(CloudError) as info:
        reconcile.apply(target("stuck"), settings_for([VPN, OFFICE]))

    assert info.value.code == "ConcurrentChange"
    assert faults.sent[AUTHORIZE] <= 5
    assert declared(cloud.ec2, "stuck") == {("tcp", 8786, 8787, "10.1.0.0/16")}


def test_a_not_found_that_never_resolves_is_an_error_not_a_loop(cloud, faults):
    reconcile.apply(target("stuck-revoke"), settings_for([VPN, PEERED]))
    faults.sent.clear()
    faults.fail(REVOKE, "InvalidPermission.NotFound", times=None)

    with pytest.raises(CloudError) as info:
        reconcile.apply(target("stuck-revoke"), settings_for([VPN]))

    assert info.value.code == "ConcurrentChange"
    assert faults.sent[REVOKE] <= 5
    assert declared(cloud.ec2, "stuck-revoke") == A


def test_a_group_created_concurrently_is_adopted(cloud, faults):
    """Another kernel created the group between our find and our create."""

    def create_it(_request):
        cloud.ec2.create_security_group(
            GroupName="coiled-jupyter-twice",
            Description="Dask cluster twice",
            TagSpecifications=[
                {
                    "ResourceType": "security-group",
                    "Tags": [
                        {"Key": "coiled-jupyter:owner", "Value": "coiled-jupyter"},
                        {"Key": "coiled-jupyter:cluster", "Value": "twice"},
                    ],
                }
            ],
        )

    faults.fail("CreateSecurityGroup", "InvalidGroup.Duplicate", before=create_it)

    reconcile.apply(target("twice"), settings_for([VPN, PEERED]))

    assert declared(cloud.ec2, "twice") == A


# --------------------------------------------------------------------------------------------------
# Destroy of a group in use


def test_dependency_violation_on_destroy_says_what_to_do(cloud, faults):
    reconcile.apply(target("in-use"), settings_for([VPN]))
    faults.fail(
        "DeleteSecurityGroup", "DependencyViolation", message="resource sg-x has a dependent object"
    )

    with pytest.raises(CloudError) as info:
        session.destroy("in-use")

    assert info.value.code == "DependencyViolation"
    assert "stop the cluster first" in str(info.value)
    assert group(cloud.ec2, "in-use")  # still there
    assert session.destroy("in-use").deleted


# --------------------------------------------------------------------------------------------------
# Credentials never in errors


KEY_ID = "AKIAEXAMPLEKEYID7777"
SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"


def _everything_said(error: BaseException) -> str:
    return "\n".join(
        [
            str(error),
            repr(error),
            "".join(traceback.format_exception(type(error), error, error.__traceback__)),
        ]
    )


@pytest.mark.parametrize(
    "code", ["AuthFailure", "UnauthorizedOperation", "SignatureDoesNotMatch", "OptInRequired"]
)
def test_cloud_errors_never_carry_credentials(aws_backend, code):
    """With the aws backend (pointed at the sandbox) and explicit keys in the environment."""
    aws_backend.faults.fail(
        DESCRIBE,
        code,
        status=403,
        times=None,
        message="AWS was not able to validate the provided access credentials",
    )
    with pytest.raises(CloudError) as info:
        reconcile.apply(target("secret"), settings_for([VPN]))
    said = _everything_said(info.value)
    assert code in str(info.value)
    assert KEY_ID not in said and SECRET not in said


def test_connections_do_not_show_their_keys():
    connection = aws.Connection(region="us-east-1", access_key_id=KEY_ID, secret_access_key=SECRET)
    assert KEY_ID not in repr(connection) and SECRET not in repr(connection)


@pytest.fixture
def aws_backend(aws_backend_on_sandbox, monkeypatch, make_faults):
    """The ``aws`` backend redirected to the sandbox, keys given in the environment; the client is
    checked to point at loopback before any call."""
    import types

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    ec2 = aws.client("ec2", target().connection())
    assert ec2.meta.endpoint_url == aws_backend_on_sandbox.url
    return types.SimpleNamespace(faults=make_faults(ec2), ec2=ec2)


# --------------------------------------------------------------------------------------------------
# Verification from the responses


def test_an_authorize_response_listing_another_rule_than_sent_is_checked_by_a_read(cloud):
    """The request goes to the sandbox as sent; the answer is altered to list another network, as a
    cloud storing something else than asked would: the core does not trust it and reads the group."""
    import urllib.request

    from botocore.awsrequest import AWSResponse

    class Body:
        """What botocore reads a response body from (``stream()``)."""

        def __init__(self, data: bytes):
            self.data = data

        def stream(self, **_):
            yield self.data

    reconcile.apply(target("verified"), settings_for([VPN]))
    ec2 = aws.client("ec2", target().connection())
    sent: list[str] = []

    def forward_and_alter(request, event_name, **_):
        operation = event_name.split(".")[2]
        sent.append(operation)
        if operation != AUTHORIZE:
            return None
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        data = request.body.encode() if isinstance(request.body, str) else request.body
        forwarded = urllib.request.Request(
            request.url, data=data, headers=dict(request.headers), method="POST"
        )
        with opener.open(forwarded, timeout=30) as answer:
            body = answer.read().replace(b"10.2.0.0/16", b"10.99.0.0/16")
        return AWSResponse(request.url, 200, {"Content-Type": "text/xml"}, Body(body))

    ec2.meta.events.register("before-send", forward_and_alter)
    try:
        result = reconcile.apply(target("verified"), settings_for([VPN, PEERED]))
    finally:
        ec2.meta.events.unregister("before-send", forward_and_alter)

    assert sent == [DESCRIBE, AUTHORIZE, DESCRIBE]  # find, authorize, the read that checks it
    assert declared(cloud.ec2, "verified") == A
    reported = {(r.protocol, r.from_port, r.to_port, r.source) for r in result.table.rules}
    assert ("tcp", 8786, 8786, "10.2.0.0/16") in reported
    assert not any(r.source == "10.99.0.0/16" for r in result.table.rules)
