"""Undo (issue 22, item 6): every apply records the group's previous rules on this machine, per
cluster; ``history`` lists them and ``undo`` plans the way back, applying it only when asked.

Against the sandbox; the group is read back with boto3 clients of the test's own. Each test names
clusters of its own, since the history (in the shared state folder) outlives a sandbox reset.
"""

from __future__ import annotations

import uuid

import pytest
from IPython.core.error import UsageError

import coiled_jupyter
from coiled_jupyter.provision import history as kept
from coiled_jupyter.provision.results import ApplyResult, HistoryView, Plan
from coiled_jupyter.provision.target import target

VPN = "set [{ports: [8786], cidr: 10.1.0.0/16, description: VPN}]"
OFFICE = "set [{ports: [8786, 8787], cidr: 10.2.0.0/16}]"


def line(ip, text):
    return ip.run_line_magic("coiled_ingress", text)


def group_rules(cloud, cluster) -> list[tuple[int, int, str]]:
    [group] = [
        g
        for g in cloud.ec2.describe_security_groups()["SecurityGroups"]
        if {"Key": "coiled-jupyter:cluster", "Value": cluster} in g["Tags"]
    ]
    return sorted(
        (p["FromPort"], p["ToPort"], r["CidrIp"])
        for p in group["IpPermissions"]
        if p["IpProtocol"] == "tcp"
        for r in p["IpRanges"]
    )


@pytest.fixture
def cluster(ip, sandbox, dask_config):
    name = f"undo-{uuid.uuid4().hex[:8]}"
    ip.run_line_magic("config", f'CoiledMagics.cluster = "{name}"')
    return name


def applied_twice(ip):
    line(ip, VPN)
    line(ip, "apply")
    line(ip, OFFICE)
    line(ip, "apply")


def test_every_apply_that_changes_the_group_records_what_it_held_before(ip, cluster):
    line(ip, VPN)
    line(ip, "apply")
    line(ip, "apply")  # no change: nothing to record
    line(ip, OFFICE)
    line(ip, "apply")
    entries = kept.entries(target(cluster))
    assert [e.created for e in entries] == [False, True]
    newest, first = entries
    assert first.before == () and first.changes == ("create group", "add tcp 8786 from 10.1.0.0/16")
    assert [(r.ports, r.source, r.description) for r in newest.before] == [
        ("8786", "10.1.0.0/16", "VPN")
    ]
    assert newest.changes == (
        "add tcp 8786-8787 from 10.2.0.0/16",
        "remove tcp 8786 from 10.1.0.0/16",
    )
    assert kept.path(target(cluster)).parent.parent == kept.state_dir()
    # The magic and the Python API show the same table, newest first.
    shown = line(ip, "history")
    assert isinstance(shown, HistoryView) and shown.entries == tuple(entries)
    assert coiled_jupyter.history(cluster).entries == tuple(entries)
    text = repr(shown)
    assert text.startswith(f"Firewall history: cluster '{cluster}'")
    assert "2 applies recorded on this machine, newest first" in text
    rows = text.splitlines()
    newest_row = next(i for i, r in enumerate(rows) if "add tcp 8786-8787" in r)
    first_row = next(i for i, r in enumerate(rows) if "create group" in r)
    assert newest_row < first_row
    assert rows[newest_row].endswith("tcp 8786 from 10.1.0.0/16")  # Before
    assert rows[first_row].endswith("no rules")
    assert f"%coiled_ingress undo --cluster {cluster}" in text


def test_undo_plans_the_way_back_and_changes_nothing(ip, cluster, cloud):
    applied_twice(ip)
    before = group_rules(cloud, cluster)
    session = coiled_jupyter.effective_settings().rules
    plan = line(ip, "undo")
    assert isinstance(plan, Plan)
    assert [(r.ports, r.source) for r in plan.add] == [("8786", "10.1.0.0/16")]
    assert [(r.ports, r.source) for r in plan.remove] == [("8786-8787", "10.2.0.0/16")]
    assert plan.notes[0].startswith("undo: back to the 1 rule the group held before the apply at ")
    text = repr(plan)
    assert f"  %coiled_ingress undo --apply --cluster {cluster}  # apply this plan" in text
    assert group_rules(cloud, cluster) == before
    assert coiled_jupyter.effective_settings().rules == session
    assert coiled_jupyter.undo(cluster).add == plan.add


def test_undo_apply_goes_back_sets_the_session_and_can_be_undone(ip, cluster, cloud):
    applied_twice(ip)
    result = line(ip, "undo --apply")
    assert isinstance(result, ApplyResult) and result.changed
    assert group_rules(cloud, cluster) == [(8786, 8786, "10.1.0.0/16")]
    # The session holds the rules gone back to, so the next apply keeps them.
    assert [(r.ports, r.source, r.description) for r in line(ip, "").settings.rules] == [
        ("8786", "10.1.0.0/16", "VPN")
    ]
    assert not line(ip, "plan").changes
    # That apply is recorded too: undo again goes forward to the office rules.
    assert len(kept.entries(target(cluster))) == 3
    coiled_jupyter.undo(cluster, apply=True)
    assert group_rules(cloud, cluster) == [(8786, 8787, "10.2.0.0/16")]


def test_undo_of_the_apply_that_created_the_group_leaves_it_without_rules(ip, cluster, cloud):
    line(ip, VPN)
    line(ip, "apply")
    plan = line(ip, "undo")
    assert [(r.ports, r.source) for r in plan.remove] == [("8786", "10.1.0.0/16")]
    assert "That apply created the group: undo leaves it without rules" in plan.notes[0]
    line(ip, "undo --apply")
    assert group_rules(cloud, cluster) == []


def test_history_is_per_cluster_and_undo_without_one_is_a_sentence(ip, cluster, cloud):
    applied_twice(ip)
    other = f"{cluster}-other"
    assert line(ip, f"history --cluster {other}").entries == ()
    with pytest.raises(UsageError, match=f"no apply of cluster '{other}' is recorded on this"):
        line(ip, f"undo --cluster {other}")
    with pytest.raises(UsageError, match="does not take --apply"):
        line(ip, "history --apply")
    assert group_rules(cloud, cluster) == [(8786, 8787, "10.2.0.0/16")]


def test_a_damaged_history_is_one_sentence_and_never_rules(ip, cluster, cloud):
    applied_twice(ip)
    file = kept.path(target(cluster))
    file.write_text(file.read_text() + '{"at": "x", "group_id": "sg-1", "created": false, ')
    with pytest.raises(UsageError, match=r"the apply history .* cannot be read \(line 3: "):
        line(ip, "undo --apply")
    file.write_text(
        '{"at": "x", "group_id": "sg-1", "created": false, "changes": [], '
        '"before": [{"ports": [22], "cidr": "10.1.0.2/16"}]}\n'
    )
    with pytest.raises(UsageError, match="host bits set"):
        line(ip, "history")
    assert group_rules(cloud, cluster) == [(8786, 8787, "10.2.0.0/16")]


def test_undo_completes_its_option(ip):
    from IPython.core.completer import provisionalcompleter

    text = "%coiled_ingress undo --a"
    with provisionalcompleter():
        assert "--apply" in [c.text for c in ip.Completer.completions(text, len(text))]
