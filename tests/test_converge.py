"""Applies that converge whatever the path, against the sandbox: replacements across the quota, in a
safe order the plan announces; description changes planned as updates and applied; rules this tool
wrote told from rules added by hand; 'me' replaced when the notebook's address changes; the apply lock
giving up with a sentence. Outcomes are read back with the test's own boto3 clients (``cloud``).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import dask.config
import pytest

from coiled_jupyter import session
from coiled_jupyter.errors import LockTimeout
from coiled_jupyter.provision import aws, reconcile
from coiled_jupyter.provision.target import target
from coiled_jupyter.rules import Rule
from coiled_jupyter.settings import effective_settings

OWNER = {"Key": "coiled-jupyter:owner", "Value": "coiled-jupyter"}


def settings_for(ingress):
    return effective_settings({"ingress": ingress}, account=lambda: None)


def networks(count: int, start: int = 0, ports=(8786,)) -> list[dict]:
    """``count`` IPv4 /16s that neither touch nor collapse: 10.<2k>.0.0/16."""
    return [
        {"ports": list(ports), "cidr": f"10.{2 * k}.0.0/16"} for k in range(start, start + count)
    ]


def the_group(ec2, cluster: str) -> dict:
    found = ec2.describe_security_groups(
        Filters=[{"Name": "tag:coiled-jupyter:cluster", "Values": [cluster]}]
    )["SecurityGroups"]
    assert len(found) == 1, found
    return found[0]


def entries(ec2, cluster: str) -> dict[tuple, str]:
    """Every inbound CIDR entry as the server holds it -> its description (self rule left out)."""
    out = {}
    for p in the_group(ec2, cluster)["IpPermissions"]:
        key = (p["IpProtocol"], p.get("FromPort"), p.get("ToPort"))
        for r in p.get("IpRanges", []):
            out[(*key, r["CidrIp"])] = r.get("Description", "")
        for r in p.get("Ipv6Ranges", []):
            out[(*key, r["CidrIpv6"])] = r.get("Description", "")
    return out


def rule_tags(ec2, cluster: str) -> dict[str, dict]:
    """CIDR of each inbound rule -> its tags, as DescribeSecurityGroupRules reports them."""
    gid = the_group(ec2, cluster)["GroupId"]
    rules = ec2.describe_security_group_rules(Filters=[{"Name": "group-id", "Values": [gid]}])
    return {
        r.get("CidrIpv4") or r.get("CidrIpv6") or r["ReferencedGroupInfo"]["GroupId"]: {
            t["Key"]: t["Value"] for t in r.get("Tags", [])
        }
        for r in rules["SecurityGroupRules"]
        if not r["IsEgress"]
    }


def expected(rules: list[dict]) -> set[tuple]:
    return {("tcp", r["ports"][0], r["ports"][-1], r["cidr"]) for r in rules}


# --------------------------------------------------------------------------------------------------
# Replacements across the quota


def test_forty_rules_replaced_by_forty_others_converge_in_one_apply(cloud, api_calls):
    old, new = networks(40), networks(40, start=40)
    reconcile.apply(target("swap"), settings_for(old))
    assert set(entries(cloud.ec2, "swap")) == expected(old)

    planned = reconcile.plan(target("swap"), settings_for(new))
    # said before anything happens: the plan changed nothing
    assert set(entries(cloud.ec2, "swap")) == expected(old)
    assert len(planned.add) == 40 and len(planned.remove) == 40
    assert len(planned.add_later) == 21  # 41 held (with the self rule): room for 19 first
    note = " ".join(planned.notes)
    assert "access narrows briefly" in note and "quota of 60" in note
    assert planned.to_payload()["steps"] == [
        {"action": "add", "rules": 19},
        {"action": "remove", "rules": 40},
        {"action": "add", "rules": 21},
    ]

    api_calls.clear()
    result = reconcile.apply(target("swap"), settings_for(new))

    assert set(entries(cloud.ec2, "swap")) == expected(new)
    assert result.changed and "access narrows briefly" in " ".join(result.plan.notes)
    assert dict(api_calls) == {
        "ec2:DescribeSecurityGroups": 2,  # find, and the read that verifies the result
        "ec2:AuthorizeSecurityGroupIngress": 2,
        "ec2:RevokeSecurityGroupIngress": 1,
    }
    gid = the_group(cloud.ec2, "swap")["GroupId"]
    assert {r.source for r in result.table.rules} == {r["cidr"] for r in new} | {gid}
    again = reconcile.apply(target("swap"), settings_for(new))
    assert not again.changed and again.plan.summary == "no change"


def test_replacements_of_removed_rules_go_first_and_the_note_names_what_waits(cloud):
    old = networks(40)
    # the first 20 old networks on 8786-8787 (each re-admits what an old rule admitted), 20 new ones
    wider = networks(20, ports=(8786, 8787))
    fresh = networks(20, start=60)
    reconcile.apply(target("widen"), settings_for(old))

    planned = reconcile.plan(target("widen"), settings_for([*wider, *fresh]))

    first = [r for r in planned.add if r not in set(planned.add_later)]
    assert len(first) == 19
    assert all(r.to_port == 8787 for r in first)  # the replacements of removed rules
    waiting = [r for r in planned.add_later if r.to_port == 8787]
    assert len(waiting) == 1
    note = next(n for n in planned.notes if "narrows" in n)
    assert str(waiting[0]) in note and "refused for that moment" in note

    reconcile.apply(target("widen"), settings_for([*wider, *fresh]))
    assert set(entries(cloud.ec2, "widen")) == expected(wider) | expected(fresh)


def test_a_change_that_fits_adds_first_and_announces_no_narrowing(cloud):
    reconcile.apply(target("fits"), settings_for(networks(10)))
    planned = reconcile.plan(target("fits"), settings_for(networks(10, start=10)))
    assert planned.add_later == ()
    assert not any("narrows" in n for n in planned.notes)
    assert [s["action"] for s in planned.steps] == ["add", "remove"]


# --------------------------------------------------------------------------------------------------
# Descriptions


def test_a_description_change_is_planned_as_an_update_and_applied(cloud, api_calls):
    before = [
        {"ports": [8786], "cidr": "10.1.0.0/16", "description": "VPN"},
        {"ports": [8787], "cidr": "2001:db8::/32", "description": "v6 office"},
        {"ports": [8788], "cidr": "10.3.0.0/16", "description": "same"},
    ]
    after = [
        {"ports": [8786], "cidr": "10.1.0.0/16", "description": "office VPN"},
        {"ports": [8787], "cidr": "2001:db8::/32", "description": ""},
        {"ports": [8788], "cidr": "10.3.0.0/16", "description": "same"},
    ]
    reconcile.apply(target("words"), settings_for(before))

    planned = reconcile.plan(target("words"), settings_for(after))

    assert planned.changes and planned.add == () and planned.remove == ()
    assert [(r.source, r.description) for r in planned.update] == [
        ("10.1.0.0/16", "office VPN"),
        ("2001:db8::/32", ""),
    ]
    assert planned.previous == ("VPN", "v6 office")
    assert "update 2" in planned.summary
    rows = [r for r in planned.to_payload()["rows"] if r["action"] == "update"]
    assert rows[0]["description"] == "office VPN" and rows[0]["previous_description"] == "VPN"
    text, html = repr(planned), planned._repr_mimebundle_()["text/html"]
    assert "Was" in text and "office VPN" in text
    assert 'class="cj-update"' in html and '<th scope="col">Was</th>' in html

    api_calls.clear()
    result = reconcile.apply(target("words"), settings_for(after))

    held = entries(cloud.ec2, "words")
    assert held[("tcp", 8786, 8786, "10.1.0.0/16")] == "office VPN"
    assert held[("tcp", 8787, 8787, "2001:db8::/32")] == ""
    assert held[("tcp", 8788, 8788, "10.3.0.0/16")] == "same"
    assert result.changed and not result.table.warnings
    # find, update, and the read-back (the update's response confirms nothing)
    assert dict(api_calls) == {
        "ec2:DescribeSecurityGroups": 2,
        "ec2:UpdateSecurityGroupRuleDescriptionsIngress": 1,
    }
    assert not reconcile.apply(target("words"), settings_for(after)).changed


# --------------------------------------------------------------------------------------------------
# Who wrote a rule


def test_rules_are_tagged_and_the_plan_tells_hand_made_from_no_longer_declared(cloud, add_by_hand):
    vpn = {"ports": [8786], "cidr": "10.1.0.0/16"}
    peered = {"ports": [8786], "cidr": "10.2.0.0/16"}
    reconcile.apply(target("whose"), settings_for([vpn, peered]))
    gid = the_group(cloud.ec2, "whose")["GroupId"]
    tags = rule_tags(cloud.ec2, "whose")
    assert all(t.get(OWNER["Key"]) == OWNER["Value"] for t in tags.values()), tags
    add_by_hand(cloud.ec2, gid, 22, "10.99.0.0/16", "console")

    planned = reconcile.plan(target("whose"), settings_for([vpn]))

    origins = dict(zip((r.source for r in planned.remove), planned.remove_origins))
    assert origins == {"10.2.0.0/16": "no longer declared", "10.99.0.0/16": "added by hand"}
    hand = next(n for n in planned.notes if "added by hand" in n)
    assert "10.99.0.0/16" in hand and "10.2.0.0/16" not in hand
    assert "owned by coiled_jupyter" in hand
    ours = next(n for n in planned.notes if "no longer declared" in n)
    assert "10.2.0.0/16" in ours and "10.99.0.0/16" not in ours
    rows = {r["source"]: r.get("origin") for r in planned.to_payload()["rows"]}
    assert rows["10.99.0.0/16"] == "added by hand" and rows["10.2.0.0/16"] == "no longer declared"

    table = reconcile.describe(target("whose"), settings_for([vpn]))
    origins = dict(zip((r.source for r in table.rules), table.origins))
    assert origins["10.99.0.0/16"] == "added by hand"
    assert origins["10.2.0.0/16"] == "no longer declared"

    reconcile.apply(target("whose"), settings_for([vpn]))
    assert set(entries(cloud.ec2, "whose")) == {("tcp", 8786, 8786, "10.1.0.0/16")}


def test_a_plan_of_declared_rules_reads_no_tags(cloud, api_calls):
    reconcile.apply(target("untagged-read"), settings_for(networks(3)))
    api_calls.clear()
    reconcile.plan(target("untagged-read"), settings_for(networks(4)))
    assert dict(api_calls) == {"ec2:DescribeSecurityGroups": 1}


def test_the_old_me_rule_is_replaced_when_the_address_changes(cloud):
    me = settings_for([{"ports": [8786], "cidr": "me"}, {"ports": [8787], "cidr": "10.1.0.0/16"}])
    with dask.config.set({"coiled.client_public_ip": "203.0.113.7"}):
        reconcile.apply(target("roaming"), me)
    tags = rule_tags(cloud.ec2, "roaming")
    assert tags["203.0.113.7/32"]["coiled-jupyter:me"] == "203.0.113.7/32"
    assert "10.1.0.0/16" not in tags["10.1.0.0/16"].get("coiled-jupyter:me", "").split()

    with dask.config.set({"coiled.client_public_ip": "198.51.100.4"}):
        planned = reconcile.plan(target("roaming"), me)
        assert [r.source for r in planned.add] == ["198.51.100.4/32"]
        assert dict(zip((r.source for r in planned.remove), planned.remove_origins)) == {
            "203.0.113.7/32": "earlier address of 'me'"
        }
        assert any("'me' is now 198.51.100.4/32" in n for n in planned.notes)
        reconcile.apply(target("roaming"), me)
        assert not reconcile.apply(target("roaming"), me).changed

    assert set(entries(cloud.ec2, "roaming")) == {
        ("tcp", 8786, 8786, "198.51.100.4/32"),
        ("tcp", 8787, 8787, "10.1.0.0/16"),
    }
    assert rule_tags(cloud.ec2, "roaming")["198.51.100.4/32"]["coiled-jupyter:me"] == (
        "198.51.100.4/32"
    )


# --------------------------------------------------------------------------------------------------
# The apply lock

_HOLDER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from coiled_jupyter.provision.target import target
    from coiled_jupyter.state import file_lock, lock_name

    t = target(sys.argv[1])
    with file_lock(lock_name(t.backend, t.region, t.vpc_id, t.cluster)):
        Path(sys.argv[2]).touch()
        while not Path(sys.argv[3]).exists():
            time.sleep(0.01)
""")


def test_an_apply_waiting_on_another_kernels_lock_says_so_and_gives_up(sandbox, tmp_path):
    held, release = tmp_path / "held", tmp_path / "release"
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, "locked", str(held), str(release)],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not held.exists():
            assert holder.poll() is None, holder.communicate()
            assert time.monotonic() < deadline, "the holder never took the lock"
            time.sleep(0.01)
        said: list[str] = []
        start = time.monotonic()
        with dask.config.set({"coiled-jupyter.lock-timeout": 0.5}):
            with pytest.raises(LockTimeout) as info:
                session.apply(
                    "locked",
                    backend_options={"ingress": [{"ports": [8786], "cidr": "10.1.0.0/16"}]},
                    progress=said.append,
                )
        waited = time.monotonic() - start
    finally:
        release.touch()
        holder.wait(timeout=30)
    assert said == [
        "waiting for another kernel's apply to cluster 'locked' (another kernel on "
        "this machine holds it)"
    ]
    assert str(info.value).startswith("gave up waiting for another kernel's apply to cluster")
    assert "after 0.5 s" in str(info.value) and "\n" not in str(info.value)
    assert 0.5 <= waited < 10
    # nothing was created while it waited; once released, the apply goes through
    assert not session.describe("locked").exists
    assert session.apply(
        "locked", backend_options={"ingress": [{"ports": [8786], "cidr": "10.1.0.0/16"}]}
    ).changed


def test_the_tags_of_a_rule_are_what_the_core_reads(cloud):
    reconcile.apply(target("read-tags"), settings_for(networks(2)))
    gid = the_group(cloud.ec2, "read-tags")["GroupId"]
    groups = aws.SecurityGroups(target("read-tags").connected().connection())
    tags = groups.rule_tags(gid)
    assert tags[Rule("tcp", 8786, 8786, "10.0.0.0/16").key][OWNER["Key"]] == OWNER["Value"]
    assert tags[reconcile.self_rule(gid).key][OWNER["Key"]] == OWNER["Value"]


def test_the_quota_is_counted_per_family_on_aws_and_together_on_the_sandbox():
    """The order is planned from the group as read: AWS holds 60 IPv4 and 60 IPv6 rules apart; the
    sandbox (moto) 60 inbound rules in all."""
    gid = "sg-0123456789abcdef0"
    v4 = [Rule("tcp", 8786, 8786, f"10.{2 * k}.0.0/16") for k in range(50)]
    group = aws.Group(gid, "g", "vpc-1", "123456789012", {}, (*v4, reconcile.self_rule(gid)))
    v6 = [Rule("tcp", 8786, 8786, f"2001:db8:{k:x}::/48") for k in range(20)]
    desired = [*v4[:40], *v6]

    on_aws = reconcile.make_plan(
        target("families", backend="aws", region="us-east-1"), group, desired, "test"
    )
    on_sandbox = reconcile.make_plan(target("families"), group, desired, "test")

    assert len(on_aws.add) == 20 and on_aws.add_later == ()  # 20 IPv6 beside 51 IPv4: fits
    assert not any("narrows" in n for n in on_aws.notes)
    assert len(on_sandbox.add_later) == 11  # 51 held: room for 9 of the 20 before the removal
    assert any("51 + 20 inbound rules" in n for n in on_sandbox.notes)
