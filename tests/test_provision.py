"""The shared provisioning core against the sandbox: create, update, no-op, destroy, foreign groups,
rules added by hand, quotas, host bits, IPv6, the self rule, prefix lists, call counts, two processes
at once, the scheduler's address and the keyword arguments for ``coiled.Cluster``.

Every outcome is read back with boto3 clients of the test's own (``cloud`` fixture) and compared with
what the result objects say.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import dask.config
import pytest

from coiled_jupyter import session
from coiled_jupyter.errors import CloudError, ForeignGroupError
from coiled_jupyter.provision import aws, reconcile
from coiled_jupyter.provision.reconcile import QuotaError
from coiled_jupyter.provision.target import target
from coiled_jupyter.rules import IngressError, Rule
from coiled_jupyter.settings import effective_settings

OWNER = "coiled-jupyter:owner"
CLUSTER = "coiled-jupyter:cluster"
VPN = {"ports": [8786, 8787], "cidr": "10.1.0.0/16", "description": "VPN"}
PEERED = {"ports": [8786], "cidr": "10.2.0.0/16", "description": "peered VPC"}


def settings_for(ingress, **options):
    """Settings resolved before any counting, without the account store."""
    return effective_settings({"ingress": ingress, **options}, account=lambda: None)


def groups_of(ec2, cluster: str) -> list[dict]:
    return ec2.describe_security_groups(Filters=[{"Name": f"tag:{CLUSTER}", "Values": [cluster]}])[
        "SecurityGroups"
    ]


def held(group: dict) -> set[tuple]:
    """Every inbound entry exactly as the server holds it: (protocol, from, to, source)."""
    out = set()
    for p in group["IpPermissions"]:
        key = (p["IpProtocol"], p.get("FromPort"), p.get("ToPort"))
        out.update((*key, r["CidrIp"]) for r in p.get("IpRanges", []))
        out.update((*key, r["CidrIpv6"]) for r in p.get("Ipv6Ranges", []))
        out.update((*key, r["GroupId"]) for r in p.get("UserIdGroupPairs", []))
        out.update((*key, r["PrefixListId"]) for r in p.get("PrefixListIds", []))
    return out


def the_group(ec2, cluster: str) -> dict:
    found = groups_of(ec2, cluster)
    assert len(found) == 1, found
    return found[0]


def state(ec2, cluster: str) -> set[tuple]:
    return held(the_group(ec2, cluster))


def self_entry(group_id: str) -> tuple:
    return ("-1", None, None, group_id)


def networks(count: int, start: int = 0) -> list[dict]:
    """``count`` IPv4 networks that neither touch nor collapse: 10.<2k>.0.0/16."""
    return [{"ports": [8786], "cidr": f"10.{2 * k}.0.0/16"} for k in range(start, start + count)]


# --------------------------------------------------------------------------------------------------
# Create, update, no-op, destroy


def test_create_makes_a_tagged_group_with_compacted_rules_and_the_self_rule(cloud):
    adjacent = [
        {"ports": [9000], "cidr": "10.7.0.0/25"},
        {"ports": [9000], "cidr": "10.7.0.128/25"},
    ]
    result = reconcile.apply(target("alpha"), settings_for([VPN, PEERED, *adjacent]))

    group = the_group(cloud.ec2, "alpha")
    tags = {t["Key"]: t["Value"] for t in group["Tags"]}
    assert tags[OWNER] == "coiled-jupyter"
    assert tags[CLUSTER] == "alpha"
    assert group["GroupName"] == "coiled-jupyter-alpha"
    gid = group["GroupId"]
    assert held(group) == {
        ("tcp", 8786, 8787, "10.1.0.0/16"),  # two ports, one rule
        ("tcp", 8786, 8786, "10.2.0.0/16"),
        ("tcp", 9000, 9000, "10.7.0.0/24"),  # two adjacent /25s, one /24
        self_entry(gid),
    }
    self_rules = [p for p in group["IpPermissions"] if p["IpProtocol"] == "-1"]
    assert self_rules[0]["UserIdGroupPairs"][0]["Description"] == aws.SELF_DESCRIPTION

    assert result.changed and result.plan.create
    assert result.table.group_id == gid
    assert result.table.account_id == group["OwnerId"]
    assert {(r.protocol, r.from_port, r.to_port, r.source) for r in result.table.rules} == {
        ("tcp", 8786, 8787, "10.1.0.0/16"),
        ("tcp", 8786, 8786, "10.2.0.0/16"),
        ("tcp", 9000, 9000, "10.7.0.0/24"),
        ("all", 0, 65535, gid),
    }
    origins = dict(zip((r.source for r in result.table.rules), result.table.origins))
    assert origins[gid] == "this group (cluster-internal)"
    assert origins["10.1.0.0/16"] == "cluster options (backend_options)"
    assert any("created" in note and "itself" in note for note in result.plan.notes)


def test_update_adds_and_removes_and_authorizes_before_revoking(cloud, faults):
    reconcile.apply(target("beta"), settings_for([VPN, PEERED]))
    gid = the_group(cloud.ec2, "beta")["GroupId"]
    faults.log.clear()

    wanted = [VPN, {"ports": [8786], "cidr": "10.3.0.0/16"}]
    result = reconcile.apply(target("beta"), settings_for(wanted))

    assert result.changed and not result.plan.create
    assert [r.source for r in result.plan.add] == ["10.3.0.0/16"]
    assert [r.source for r in result.plan.remove] == ["10.2.0.0/16"]
    assert {r.source for r in result.plan.keep} == {"10.1.0.0/16", gid}
    assert state(cloud.ec2, "beta") == {
        ("tcp", 8786, 8787, "10.1.0.0/16"),
        ("tcp", 8786, 8786, "10.3.0.0/16"),
        self_entry(gid),
    }
    writes = [op for op in faults.log if op.endswith("SecurityGroupIngress")]
    assert writes == ["AuthorizeSecurityGroupIngress", "RevokeSecurityGroupIngress"]


def test_second_apply_changes_nothing(cloud):
    wanted = settings_for([VPN, PEERED])
    reconcile.apply(target("gamma"), wanted)
    before = the_group(cloud.ec2, "gamma")

    planned = reconcile.plan(target("gamma"), wanted)
    again = reconcile.apply(target("gamma"), wanted)

    assert not planned.changes and not planned.add and not planned.remove
    assert not again.changed
    assert not again.plan.add and not again.plan.remove
    assert held(the_group(cloud.ec2, "gamma")) == held(before)
    assert the_group(cloud.ec2, "gamma")["GroupId"] == before["GroupId"]


def test_destroy_deletes_the_group_and_a_missing_cluster_is_a_no_op(cloud):
    reconcile.apply(target("delta"), settings_for([VPN]))
    gid = the_group(cloud.ec2, "delta")["GroupId"]

    gone = session.destroy("delta")

    assert gone.deleted and gone.group_id == gid
    assert groups_of(cloud.ec2, "delta") == []
    assert gid not in {g["GroupId"] for g in cloud.ec2.describe_security_groups()["SecurityGroups"]}
    again = session.destroy("delta")
    assert not again.deleted and again.group_id is None
    never = session.destroy("never-made")
    assert not never.deleted and never.group_id is None


def test_describe_of_a_cluster_without_group_says_so(sandbox):
    table = reconcile.describe(target("nothing-here"), settings_for([VPN]))
    assert not table.exists and table.rules == ()
    assert any("no security group" in w for w in table.warnings)


# --------------------------------------------------------------------------------------------------
# Groups that are not ours


def _hand_made_group(ec2, name: str, tags: dict | None = None) -> str:
    kwargs = {"GroupName": name, "Description": "made by hand"}
    if tags:
        kwargs["TagSpecifications"] = [
            {
                "ResourceType": "security-group",
                "Tags": [{"Key": k, "Value": v} for k, v in tags.items()],
            }
        ]
    gid = ec2.create_security_group(**kwargs)["GroupId"]
    ec2.authorize_security_group_ingress(
        GroupId=gid,
        IpPermissions=[
            {
                "IpProtocol": "tcp",
                "FromPort": 22,
                "ToPort": 22,
                "IpRanges": [{"CidrIp": "10.9.0.0/16"}],
            }
        ],
    )
    return gid


def _rules_of(ec2, gid: str) -> set[tuple]:
    return held(ec2.describe_security_groups(GroupIds=[gid])["SecurityGroups"][0])


def test_a_group_with_our_name_but_not_our_owner_tag_is_refused(cloud):
    gid = _hand_made_group(cloud.ec2, "coiled-jupyter-epsilon")
    before = _rules_of(cloud.ec2, gid)

    with pytest.raises(ForeignGroupError) as info:
        reconcile.apply(target("epsilon"), settings_for([VPN]))

    assert gid in str(info.value) and "not owned" in str(info.value)
    assert _rules_of(cloud.ec2, gid) == before == {("tcp", 22, 22, "10.9.0.0/16")}
    # the plan says so before any apply, instead of promising a new group
    with pytest.raises(ForeignGroupError, match=gid):
        reconcile.plan(target("epsilon"), settings_for([VPN]))
    named = cloud.ec2.describe_security_groups(
        Filters=[{"Name": "group-name", "Values": ["coiled-jupyter-epsilon"]}]
    )["SecurityGroups"]
    assert [g["GroupId"] for g in named] == [gid]
    # destroy does not touch it either
    assert not session.destroy("epsilon").deleted
    assert _rules_of(cloud.ec2, gid) == before


@pytest.mark.parametrize("owner", [None, "someone-else"])
def test_a_group_with_our_cluster_tag_but_not_our_owner_tag_is_refused(cloud, owner):
    tags = {CLUSTER: "zeta", **({OWNER: owner} if owner else {})}
    gid = _hand_made_group(cloud.ec2, "zeta-by-hand", tags)
    before = _rules_of(cloud.ec2, gid)

    for call in (
        lambda: reconcile.apply(target("zeta"), settings_for([VPN])),
        lambda: reconcile.plan(target("zeta"), settings_for([VPN])),
        lambda: session.destroy("zeta"),
    ):
        with pytest.raises(ForeignGroupError, match=gid):
            call()

    assert _rules_of(cloud.ec2, gid) == before
    assert len(cloud.ec2.describe_security_groups(GroupIds=[gid])["SecurityGroups"]) == 1
    assert [g["GroupId"] for g in groups_of(cloud.ec2, "zeta")] == [gid]


# --------------------------------------------------------------------------------------------------
# Rules added by hand


def test_a_rule_added_by_hand_is_reported_then_removed(cloud, add_by_hand):
    wanted = settings_for([VPN])
    reconcile.apply(target("eta"), wanted)
    gid = the_group(cloud.ec2, "eta")["GroupId"]
    add_by_hand(cloud.ec2, gid, 22, "10.99.0.0/16", "console")

    planned = reconcile.plan(target("eta"), wanted)
    assert planned.remove == (Rule("tcp", 22, 22, "10.99.0.0/16"),)
    assert planned.remove[0].description == "console"
    assert planned.add == ()
    assert planned.remove_origins == ("added by hand",)
    note = " ".join(planned.notes)
    assert "added by hand" in note and "removed" in note and "owned by coiled_jupyter" in note

    table = reconcile.describe(target("eta"), wanted)
    origins = dict(zip((r.source for r in table.rules), table.origins))
    assert origins["10.99.0.0/16"] == "added by hand"
    assert origins["10.1.0.0/16"] == "cluster options (backend_options)"

    result = reconcile.apply(target("eta"), wanted)
    assert result.plan.remove == planned.remove
    assert state(cloud.ec2, "eta") == {("tcp", 8786, 8787, "10.1.0.0/16"), self_entry(gid)}


# --------------------------------------------------------------------------------------------------
# Quotas


def test_too_many_rules_are_refused_before_any_call(api_calls):
    too_many = settings_for(networks(60))  # 60 networks + the self rule = 61 > 60
    api_calls.clear()
    for call in (reconcile.apply, reconcile.plan):
        with pytest.raises(QuotaError) as info:
            call(target("theta"), too_many)
        assert "61 IPv4" in str(info.value) and "quota of 60" in str(info.value)
    assert sum(api_calls.values()) == 0


def test_the_quota_boundary_holds(cloud, api_calls):
    result = reconcile.apply(target("iota"), settings_for(networks(59)))  # 59 + self = 60
    assert len(state(cloud.ec2, "iota")) == 60
    assert result.table.rules and len(result.table.rules) == 60


def test_the_quota_follows_config(cloud, api_calls):
    with dask.config.set({"coiled-jupyter.rules-per-group": 5}):
        api_calls.clear()
        with pytest.raises(QuotaError, match="quota of 5"):
            reconcile.apply(target("kappa"), settings_for(networks(5)))
        assert sum(api_calls.values()) == 0
        assert groups_of(cloud.ec2, "kappa") == []
        reconcile.apply(target("kappa"), settings_for(networks(4)))
    assert len(state(cloud.ec2, "kappa")) == 5


def test_ipv4_and_ipv6_are_counted_apart(sandbox):
    v6 = [{"ports": [8786], "cidr": f"2001:db8:{2 * k:x}::/48"} for k in range(60)]
    reconcile.plan(target("lambda"), settings_for([*networks(59), *v6]))  # 60 + 60: fits
    with pytest.raises(QuotaError, match="61 IPv6"):
        reconcile.plan(
            target("lambda"), settings_for([*v6, {"ports": [8786], "cidr": "2001:db8:ff::/48"}])
        )


# --------------------------------------------------------------------------------------------------
# Canonical forms: host bits, IPv6, the self rule, prefix lists


def test_a_host_bit_cidr_stored_by_hand_matches_the_declared_network(cloud, add_by_hand):
    reconcile.apply(target("mu"), settings_for([]))
    gid = the_group(cloud.ec2, "mu")["GroupId"]
    add_by_hand(cloud.ec2, gid, 8786, "10.1.0.2/16")
    assert ("tcp", 8786, 8786, "10.1.0.2/16") in state(cloud.ec2, "mu")  # moto keeps host bits

    wanted = settings_for([{"ports": [8786], "cidr": "10.1.0.0/16"}])
    planned = reconcile.plan(target("mu"), wanted)
    assert not planned.changes
    assert Rule("tcp", 8786, 8786, "10.1.0.0/16") in planned.keep
    assert not reconcile.apply(target("mu"), wanted).changed
    assert state(cloud.ec2, "mu") == {("tcp", 8786, 8786, "10.1.0.2/16"), self_entry(gid)}


def test_a_host_bit_cidr_stored_by_hand_is_removed_when_not_declared(cloud):
    reconcile.apply(target("nu"), settings_for([VPN]))
    gid = the_group(cloud.ec2, "nu")["GroupId"]
    cloud.ec2.authorize_security_group_ingress(
        GroupId=gid,
        IpPermissions=[
            {
                "IpProtocol": "tcp",
                "FromPort": 22,
                "ToPort": 22,
                "IpRanges": [{"CidrIp": "10.5.0.7/16"}, {"CidrIp": "10.5.0.0/16"}],
                "Ipv6Ranges": [{"CidrIpv6": "2001:db8::1/32"}],
            }
        ],
    )

    planned = reconcile.plan(target("nu"), settings_for([VPN]))
    assert {r.source for r in planned.remove} == {"10.5.0.0/16", "2001:db8::/32"}

    result = reconcile.apply(target("nu"), settings_for([VPN]))

    assert {r.source for r in result.plan.remove} == {"10.5.0.0/16", "2001:db8::/32"}
    assert state(cloud.ec2, "nu") == {("tcp", 8786, 8787, "10.1.0.0/16"), self_entry(gid)}
    assert not reconcile.apply(target("nu"), settings_for([VPN])).changed


def test_ipv6_and_everyone(cloud):
    wanted = settings_for(
        [
            {"ports": [8786], "cidr": "2001:db8::/32", "description": "v6 office"},
            {"ports": [8787], "cidr": "everyone"},
        ]
    )
    result = reconcile.apply(target("xi"), wanted)
    gid = the_group(cloud.ec2, "xi")["GroupId"]
    assert state(cloud.ec2, "xi") == {
        ("tcp", 8786, 8786, "2001:db8::/32"),
        ("tcp", 8787, 8787, "0.0.0.0/0"),
        ("tcp", 8787, 8787, "::/0"),
        self_entry(gid),
    }
    assert any("8787" in w and "whole internet" in w for w in result.table.warnings)
    assert any("whole internet" in w for w in result.plan.warnings)
    assert not reconcile.apply(target("xi"), wanted).changed


def test_the_self_rule_is_restored_when_removed_by_hand(cloud):
    wanted = settings_for([PEERED])
    reconcile.apply(target("omicron"), wanted)
    gid = the_group(cloud.ec2, "omicron")["GroupId"]
    pair = [p for p in the_group(cloud.ec2, "omicron")["IpPermissions"] if p["IpProtocol"] == "-1"]
    cloud.ec2.revoke_security_group_ingress(GroupId=gid, IpPermissions=pair)
    assert self_entry(gid) not in state(cloud.ec2, "omicron")

    planned = reconcile.plan(target("omicron"), wanted)
    assert planned.add == (reconcile.self_rule(gid),)
    reconcile.apply(target("omicron"), wanted)
    assert state(cloud.ec2, "omicron") == {("tcp", 8786, 8786, "10.2.0.0/16"), self_entry(gid)}


def test_a_prefix_list_entry_is_reported_as_unmanageable_and_left_alone(cloud):
    wanted = settings_for([VPN])
    reconcile.apply(target("pi"), wanted)
    gid = the_group(cloud.ec2, "pi")["GroupId"]
    try:
        prefix_list = cloud.ec2.create_managed_prefix_list(
            PrefixListName="office",
            MaxEntries=2,
            AddressFamily="IPv4",
            Entries=[{"Cidr": "10.8.0.0/16"}],
        )["PrefixList"]["PrefixListId"]
        cloud.ec2.authorize_security_group_ingress(
            GroupId=gid,
            IpPermissions=[
                {
                    "IpProtocol": "tcp",
                    "FromPort": 8786,
                    "ToPort": 8786,
                    "PrefixListIds": [{"PrefixListId": prefix_list}],
                }
            ],
        )
    except Exception as error:  # pragma: no cover - depends on the moto version
        pytest.skip(f"moto does not support prefix lists in security groups: {error}")

    table = reconcile.describe(target("pi"), wanted)
    assert any(prefix_list in item for item in table.unmanageable)
    planned = reconcile.plan(target("pi"), wanted)
    assert not planned.changes
    assert any(prefix_list in n and "cannot manage" in n for n in planned.notes)
    result = reconcile.apply(target("pi"), wanted)
    assert not result.changed
    assert ("tcp", 8786, 8786, prefix_list) in state(cloud.ec2, "pi")


def test_me_is_this_notebooks_public_address(cloud):
    with dask.config.set({"coiled.client_public_ip": "203.0.113.7"}):
        reconcile.apply(target("rho"), settings_for([{"ports": [8786], "cidr": "me"}]))
    gid = the_group(cloud.ec2, "rho")["GroupId"]
    assert state(cloud.ec2, "rho") == {("tcp", 8786, 8786, "203.0.113.7/32"), self_entry(gid)}


def test_me_without_a_known_address_is_refused_before_any_call(api_calls):
    with dask.config.set({"coiled.client_public_ip": None}):
        api_calls.clear()
        with pytest.raises(IngressError, match="client_public_ip"):
            reconcile.apply(target("sigma"), settings_for([{"ports": [8786], "cidr": "me"}]))
    assert sum(api_calls.values()) == 0


def test_bad_target_values_are_refused_before_any_call(api_calls):
    api_calls.clear()
    with pytest.raises(IngressError) as info:
        reconcile.apply(target("bad name!", vpc_id="vpc-nope", region="mars"), settings_for([VPN]))
    text = str(info.value)
    assert "'bad name!'" in text and "'vpc-nope'" in text and "'mars'" in text
    assert sum(api_calls.values()) == 0


# --------------------------------------------------------------------------------------------------
# Call counts


def _ec2_calls(counter) -> int:
    return sum(n for name, n in counter.items() if name.startswith("ec2:"))


@pytest.mark.parametrize("count", [1, 50])
def test_calls_do_not_grow_with_the_number_of_rules(cloud, api_calls, count):
    declared = settings_for(networks(count))
    changed = settings_for([*networks(count - 1), {"ports": [8786], "cidr": "172.16.0.0/12"}])
    measured = {}

    api_calls.clear()
    reconcile.apply(target("tau"), declared)
    measured["fresh"] = _ec2_calls(api_calls)
    api_calls.clear()
    assert not reconcile.apply(target("tau"), declared).changed
    measured["no change"] = _ec2_calls(api_calls)
    api_calls.clear()
    reconcile.apply(target("tau"), changed)
    measured["one change"] = _ec2_calls(api_calls)
    api_calls.clear()
    reconcile.plan(target("tau"), changed)
    reconcile.describe(target("tau"), changed)
    measured["plan + describe"] = _ec2_calls(api_calls)

    print(f"\nEC2 calls for {count} rule(s): {measured}")
    # fresh: find, create, authorize, the verifying read; a change: find, authorize, revoke, read
    assert measured == {"fresh": 4, "no change": 1, "one change": 4, "plan + describe": 2}
    assert len(state(cloud.ec2, "tau")) == count + 1


def test_a_no_change_apply_with_default_settings_reads_once_more_for_the_account(api_calls):
    session.apply("upsilon", backend_options={"ingress": [VPN]})
    api_calls.clear()
    assert not session.apply("upsilon", backend_options={"ingress": [VPN]}).changed
    assert dict(api_calls) == {"ec2:DescribeSecurityGroups": 1, "ssm:GetParameter": 1}


# --------------------------------------------------------------------------------------------------
# Two processes at once

_RACER = textwrap.dedent("""
    import json, sys, time
    from pathlib import Path
    from coiled_jupyter.provision import reconcile
    from coiled_jupyter import session
    from coiled_jupyter.provision import account
    from coiled_jupyter.provision.target import target

    name, rules, folder, rounds = sys.argv[1], json.loads(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4])
    target()  # find the shared server before the start signal
    for n in range(rounds):
        (folder / f"ready-{n}-{name}").touch()
        while not (folder / f"go-{n}").exists():
            time.sleep(0.002)
        result = session.apply('race', backend_options={'ingress': rules})
        (folder / f"done-{n}-{name}").write_text(json.dumps(result.changed))
""")


def _wait_for(paths: list[Path], procs) -> None:
    deadline = time.monotonic() + 60
    while not all(p.exists() for p in paths):
        for proc in procs:
            if proc.poll() not in (None, 0):
                raise AssertionError(f"a racer failed: {proc.communicate()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"racers never wrote {[p for p in paths if not p.exists()]}")
        time.sleep(0.01)


def test_two_processes_applying_at_once_end_in_one_declared_state(cloud, tmp_path):
    rounds = 4
    sets = {
        "a": [VPN, PEERED],
        "b": [
            {"ports": [8786, 8787], "cidr": "172.16.0.0/12"},
            {"ports": [8786], "cidr": "2001:db8::/32"},
        ],
    }
    expected = {
        "a": {("tcp", 8786, 8787, "10.1.0.0/16"), ("tcp", 8786, 8786, "10.2.0.0/16")},
        "b": {("tcp", 8786, 8787, "172.16.0.0/12"), ("tcp", 8786, 8786, "2001:db8::/32")},
    }
    env = {**os.environ, "PYTHONPATH": str(Path(reconcile.__file__).parents[2])}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _RACER, name, json.dumps(rules), str(tmp_path), str(rounds)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, rules in sets.items()
    ]
    try:
        seen = []
        for n in range(rounds):
            _wait_for([tmp_path / f"ready-{n}-{name}" for name in sets], procs)
            (tmp_path / f"go-{n}").touch()
            _wait_for([tmp_path / f"done-{n}-{name}" for name in sets], procs)
            group = the_group(cloud.ec2, "race")
            rules = held(group) - {self_entry(group["GroupId"])}
            assert self_entry(group["GroupId"]) in held(group)
            assert rules in (expected["a"], expected["b"]), rules
            seen.append("a" if rules == expected["a"] else "b")
        for proc in procs:
            out, err = proc.communicate(timeout=60)
            assert proc.returncode == 0, err
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert len(groups_of(cloud.ec2, "race")) == 1


# --------------------------------------------------------------------------------------------------
# The scheduler's address and the kwargs for coiled.Cluster


def test_scheduler_address_public_and_private(cloud, launch):
    reconcile.apply(target("phi"), settings_for([VPN]))
    gid = the_group(cloud.ec2, "phi")["GroupId"]
    launch(gid, "phi-worker-1")
    scheduler = launch(gid, "phi-scheduler")
    assert scheduler.get("PublicIpAddress") and scheduler.get("PrivateIpAddress")

    public = session.scheduler_address("phi")
    assert public.instance_id == scheduler["InstanceId"]
    assert public.ip == scheduler["PublicIpAddress"] and public.public
    assert str(public) == f"tls://{scheduler['PublicIpAddress']}:8786"
    assert public.account_id == the_group(cloud.ec2, "phi")["OwnerId"]

    session.set_scheduler_ip(False, cluster="phi")
    private = session.scheduler_address("phi")
    assert private.ip == scheduler["PrivateIpAddress"] and not private.public
    assert private.address == f"tls://{scheduler['PrivateIpAddress']}:8786"


def test_scheduler_without_public_ip_gives_a_clear_sentence(cloud, launch):
    vpc = cloud.ec2.create_vpc(CidrBlock="10.60.0.0/16")["Vpc"]["VpcId"]
    subnet = cloud.ec2.create_subnet(VpcId=vpc, CidrBlock="10.60.1.0/24")["Subnet"]
    if subnet.get("MapPublicIpOnLaunch"):  # pragma: no cover - depends on the moto version
        pytest.skip("moto maps public IPs in new subnets")
    reconcile.apply(target("chi", vpc_id=vpc), settings_for([VPN]))
    group = the_group(cloud.ec2, "chi")
    assert group["VpcId"] == vpc
    scheduler = launch(group["GroupId"], "chi-scheduler", subnet["SubnetId"])
    if scheduler.get("PublicIpAddress"):  # pragma: no cover - depends on the moto version
        pytest.skip("moto gave the instance a public IP in a subnet that maps none")

    with pytest.raises(IngressError) as info:
        session.scheduler_address("chi", vpc_id=vpc)
    message = str(info.value)
    assert scheduler["InstanceId"] in message and "no public IP" in message
    assert "%coiled_scheduler_ip private" in message

    session.set_scheduler_ip("private", cluster="chi")
    assert session.scheduler_address("chi", vpc_id=vpc).ip == scheduler["PrivateIpAddress"]


def test_scheduler_address_before_apply_and_before_launch(cloud):
    with pytest.raises(IngressError, match="run apply first"):
        session.scheduler_address("psi")
    reconcile.apply(target("psi"), settings_for([VPN]))
    with pytest.raises(IngressError, match="start the cluster first"):
        session.scheduler_address("psi")


def test_cluster_kwargs_in_coileds_shape(cloud):
    wanted = settings_for([VPN, PEERED], use_scheduler_public_ip=False)
    before = reconcile.cluster_kwargs(target("omega"), wanted)
    assert before.security_group_id is None and before.security_groups == []
    assert before.sandbox_group_id is None and before.notes == ()

    reconcile.apply(target("omega"), wanted)
    gid = the_group(cloud.ec2, "omega")["GroupId"]
    kwargs = reconcile.cluster_kwargs(
        target("omega"),
        wanted,
        {"region_name": "us-east-1", "firewall": {"ports": [22], "cidr": "10.0.0.0/8"}},
    )

    assert kwargs == {
        "backend_options": {
            "region_name": "us-east-1",
            "ingress": [
                {"ports": [8786], "cidr": "10.2.0.0/16"},
                {"ports": [8786, 8787], "cidr": "10.1.0.0/16"},
            ],
        },
        "use_scheduler_public_ip": False,
    }
    # a moto group is never presented as one a real launcher could use
    assert kwargs.security_group_id is None and kwargs.security_groups == []
    assert kwargs.sandbox_group_id == gid
    assert [gid in note and "only in the sandbox" in note for note in kwargs.notes] == [True]
    # what it hands over parses back into the same rules; Coiled's format carries no descriptions,
    # so applying it would only clear them
    again = reconcile.plan(target("omega"), settings_for(kwargs["backend_options"]["ingress"]))
    assert not again.add and not again.remove
    assert {(r.source, r.description) for r in again.update} == {
        ("10.1.0.0/16", ""),
        ("10.2.0.0/16", ""),
    }


def test_cloud_errors_name_their_code():
    error = CloudError("InvalidGroup.NotFound", "reading failed")
    assert error.code == "InvalidGroup.NotFound" and str(error).startswith("InvalidGroup.NotFound")


def test_hand_added_icmp_and_all_traffic_rules_open_to_everyone_are_shown_and_removed(cloud):
    wanted = settings_for([PEERED])
    reconcile.apply(target("ping"), wanted)
    gid = the_group(cloud.ec2, "ping")["GroupId"]
    cloud.ec2.authorize_security_group_ingress(
        GroupId=gid,
        IpPermissions=[
            {
                "IpProtocol": "icmp",
                "FromPort": -1,
                "ToPort": -1,
                "IpRanges": [{"CidrIp": "0.0.0.0/0"}],
            },
            {"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0", "Description": "anything"}]},
        ],
    )

    table = reconcile.describe(target("ping"), wanted)
    assert {(r.protocol, r.source) for r in table.rules} >= {
        ("icmp", "0.0.0.0/0"),
        ("all", "0.0.0.0/0"),
    }
    assert any("whole internet" in w for w in table.warnings)
    assert "0.0.0.0/0" in repr(table)
    planned = reconcile.plan(target("ping"), wanted)
    assert {(r.protocol, r.source) for r in planned.remove} == {
        ("icmp", "0.0.0.0/0"),
        ("all", "0.0.0.0/0"),
    }

    reconcile.apply(target("ping"), wanted)
    assert state(cloud.ec2, "ping") == {("tcp", 8786, 8786, "10.2.0.0/16"), self_entry(gid)}


def test_a_rule_naming_a_missing_group_fails_at_once_without_retrying(cloud, api_calls):
    reconcile.apply(target("kappa"), settings_for([VPN]))
    api_calls.clear()

    with pytest.raises(CloudError) as info:
        reconcile.apply(
            target("kappa"), settings_for([VPN, {"ports": [8786], "cidr": "sg-0123456789abcdef0"}])
        )

    assert info.value.code == "InvalidGroup.NotFound"
    # find + one authorize: the NotFound of a group we did not just create is not retried
    assert api_calls["ec2:AuthorizeSecurityGroupIngress"] == 1
