"""The session module on its own, without IPython: the operations every front end calls.

The magics' tests run the same operations through ``%coiled_ingress``; these call them directly, as the
panel and the REST handlers do, against a real Dask config folder and the sandbox.
"""

from __future__ import annotations

import pytest
import yaml

from coiled_jupyter import session
from coiled_jupyter.errors import CoiledJupyterError, ConfigFileError
from coiled_jupyter.provision.results import ApplyResult, SaveResult, SettingsView
from coiled_jupyter.rules import IngressError
from coiled_jupyter.settings import SESSION, Layer, SessionChange

VPN = {"ports": [8786, 8787], "cidr": "10.1.0.0/16", "description": "VPN"}


def rules_of(view) -> list[tuple[str, str, str]]:
    return [(r.protocol, r.ports, r.source) for r in view.settings.rules]


def test_add_remove_clear_and_reset(dask_config):
    view = session.add("8786,8787", "10.1.0.0/16", description="VPN")
    assert isinstance(view, SettingsView)
    assert rules_of(view) == [("tcp", "8786", "10.1.0.0/16"), ("tcp", "8787", "10.1.0.0/16")]
    assert view.settings.ingress.layer is Layer.SESSION
    view = session.add([8000], "me", protocol="udp")
    assert ("udp", "8000", "me") in rules_of(view)
    view = session.remove(8787, "10.1.0.0/16")
    assert ("tcp", "8787", "10.1.0.0/16") not in rules_of(view)
    assert session.clear().settings.rules == []
    view = session.reset()
    assert view.settings.ingress.layer is Layer.DEFAULT
    assert SESSION.values == {}


def test_set_settings_takes_python_values_text_and_snippets(dask_config):
    assert rules_of(session.set_settings([VPN]))[0] == ("tcp", "8786", "10.1.0.0/16")
    view = session.set_settings("coiled:\n  use_scheduler_public_ip: false\n")
    assert view.settings.use_scheduler_public_ip.value is False
    assert rules_of(view)[0] == ("tcp", "8786", "10.1.0.0/16")  # the rules were kept


def test_every_edit_validates_before_it_changes_anything(dask_config):
    session.set_settings([VPN])
    before = SESSION.values
    cases = [
        lambda: session.add(8786, "10.1.0.2/16"),
        lambda: session.add(70000, "10.1.0.0/16"),
        lambda: session.remove(22, "10.9.0.0/16"),
        lambda: session.set_settings("[{ports: [8786], cidr: nowhere}]"),
        lambda: session.set_scheduler_ip("publik"),
        lambda: session.clear(cluster="bad name!"),
        lambda: session.save("team"),
    ]
    for case in cases:
        with pytest.raises(CoiledJupyterError) as info:
            case()
        assert "Traceback" not in str(info.value) and str(info.value).endswith((".", ")"))
        assert SESSION.values == before


def test_an_unparsable_config_file_leaves_the_session(dask_config):
    session.set_settings([VPN])
    before = SESSION.values
    (dask_config / "coiled.yaml").write_text("coiled: [unclosed\n")
    with pytest.raises(CoiledJupyterError):
        session.reset()
    assert SESSION.values == before


def test_check_rule_says_what_is_wrong_and_changes_nothing(dask_config):
    assert session.check_rule("8786", "10.1.0.0/16") == []
    [sentence] = session.check_rule("8786", "10.1.0.2/16")
    assert "did you mean '10.1.0.0/16'" in sentence
    assert session.check_rule("8786", "10.1.0.0/16", description="<b>")[0].count("<") >= 1
    assert SESSION.values == {}


def test_observers_hear_every_change_until_they_unsubscribe(dask_config):
    heard: list[SessionChange] = []
    unsubscribe = session.subscribe(heard.append)
    session.add(8786, "10.1.0.0/16")
    session.set_scheduler_ip("private")
    unsubscribe()
    session.reset()
    assert len(heard) == 2
    assert heard[-1].cluster == "notebook" and heard[-1].version == heard[0].version + 1
    assert heard[-1].values.use_scheduler_public_ip is False and len(heard[-1].values.ingress) == 1


def test_a_failed_edit_tells_no_observer(dask_config):
    heard: list[SessionChange] = []
    unsubscribe = session.subscribe(heard.append)
    with pytest.raises(IngressError):
        session.add(8786, "10.1.0.2/16")
    unsubscribe()
    assert heard == []


def test_save_writes_only_what_the_session_sets(dask_config):
    with pytest.raises(CoiledJupyterError, match="nothing to save"):
        session.save()
    session.set_scheduler_ip("private")
    saved = session.save()
    assert isinstance(saved, SaveResult) and saved.ingress is None
    data = yaml.safe_load((dask_config / "coiled.yaml").read_text())
    assert data == {"coiled": {"use_scheduler_public_ip": False}}  # no pinned 0.0.0.0/0
    session.add(8786, "10.1.0.0/16")
    session.save()
    data = yaml.safe_load((dask_config / "coiled.yaml").read_text())
    assert data["coiled"]["backend-options"]["ingress"] == [
        {"ports": [8786], "cidr": "10.1.0.0/16"}
    ]


def test_set_and_apply_is_all_or_nothing(cloud, dask_config):
    result = session.set_and_apply([VPN], cluster="session-apply")
    assert isinstance(result, ApplyResult) and result.changed
    before = SESSION.values
    quota = [{"ports": [8786], "cidr": f"10.{2 * k}.0.0/16"} for k in range(61)]
    with pytest.raises(CoiledJupyterError, match="quota"):
        session.set_and_apply(quota, cluster="session-apply")
    assert SESSION.values == before


def test_saving_into_a_file_that_is_not_yaml_is_refused(dask_config):
    session.set_scheduler_ip("private")
    (dask_config / "coiled.yaml").write_text("coiled: [unclosed\n")
    with pytest.raises(ConfigFileError, match="cannot be parsed"):
        session.save()
    assert (dask_config / "coiled.yaml").read_text() == "coiled: [unclosed\n"


# --------------------------------------------------------------------------------------------------
# Never widen by surprise: what the rules replace, and what a wider rule covers, are said first


def test_the_settings_and_the_plan_say_the_rules_replace_the_built_in_default(cloud, dask_config):
    view = session.add("8786,8787", "10.1.0.0/16", description="office VPN", cluster="widen")
    replaced = (
        "the rules from notebook session (this kernel) replace those of the built-in default "
        "(tcp 8786-8787 from 0.0.0.0/0); as in Coiled, the strongest layer that declares ingress "
        "wins as a whole: none of the replaced rules is kept."
    )
    assert view.to_payload()["notes"][0] == replaced
    # In the settings view it is among the details; the plan, where it matters, says it first.
    assert f"note: {replaced}" not in repr(view)
    assert f"note: {replaced}" in repr(view.expanded())
    plan = session.plan("widen")
    assert plan.notes[0] == replaced
    assert [(r.ports, r.source, r.description) for r in plan.add] == [
        ("8786-8787", "10.1.0.0/16", "office VPN")
    ]


def test_the_plan_names_a_rule_covered_by_a_wider_one_and_never_moves_its_description(
    cloud, dask_config
):
    (dask_config / "coiled.yaml").write_text(
        "coiled:\n  backend-options:\n    ingress:\n      - ports: [8786, 8787]\n"
        "        cidr: 0.0.0.0/0\n"
    )
    session.add(8786, "10.1.0.0/16", description="office VPN", cluster="widen")
    plan = session.plan("widen")
    assert [(r.ports, r.source, r.description) for r in plan.add] == [
        ("8786-8787", "0.0.0.0/0", "")
    ]
    assert plan.notes[0].startswith(
        f"the rules from notebook session (this kernel) replace those of the dask config "
        f"({dask_config / 'coiled.yaml'}) (tcp 8786-8787 from 0.0.0.0/0), and of the built-in"
    )
    assert plan.notes[1] == (
        "tcp 8786 from 10.1.0.0/16 (office VPN) is covered by tcp 8786-8787 from 0.0.0.0/0 and is "
        "not sent separately."
    )
    assert f"note: {plan.notes[1]}" in repr(plan)
    session.apply("widen")
    [group] = cloud.ec2.describe_security_groups(
        Filters=[{"Name": "group-name", "Values": ["*widen*"]}]
    )["SecurityGroups"]
    described = {
        r["CidrIp"]: r.get("Description", "")
        for p in group["IpPermissions"]
        for r in p.get("IpRanges", [])
    }
    assert described == {"0.0.0.0/0": ""}  # never "office VPN" on the world-open rule


def pasted(count: int) -> str:
    """``count`` scattered addresses on the scheduler and dashboard ports, as a pasted YAML list."""
    import ipaddress
    import random

    rng = random.Random(5)
    return "\n".join(
        f"- ports: [8786, 8787]\n  cidr: {ipaddress.IPv4Address(a)}"
        for a in rng.sample(range(1 << 24, 223 << 24), count)
    )


def test_pasted_addresses_over_the_quota_are_refused_without_quadratic_work(dask_config):
    import time

    from coiled_jupyter.provision import reconcile

    many, some = pasted(2000), pasted(500)
    start = time.thread_time()
    with pytest.raises(IngressError, match="more than the 64 KiB"):
        session.set_settings(many)  # text: refused on its size before it is read
    with pytest.raises(IngressError, match="has 2,000 rules; a security group holds at most"):
        session.set_settings(yaml.safe_load(many))  # Python values: refused on the count
    session.set_settings(some)  # 1,000 rules: parsed, then refused over the quota when sent
    with pytest.raises(CoiledJupyterError, match="501 IPv4 entries .* over the quota of 60"):
        reconcile.declared(session.show(reach=False).settings)  # no cloud call in the timing
    # A guard against the quadratic compaction coming back (27-47 s for 2,000 rules), not a speed
    # target: that is benchmarks/bench_compaction.py's (0.1 s). CPU time of this thread, with room for
    # a full suite's heap (about 2 s there, under 1 s alone).
    assert time.thread_time() - start < 10.0


def test_save_pins_everything_only_when_asked_and_says_what_it_pinned(cloud, dask_config):
    session.set_scheduler_ip("private")
    # The account defaults were not read (settings work makes no cloud call): pinning the
    # built-in default could write 0.0.0.0/0 over a team's rules, so it waits for a read.
    with pytest.raises(CoiledJupyterError, match="not read.*Run a plan"):
        session.save(everything=True)
    assert not (dask_config / "coiled.yaml").exists()
    session.plan()
    saved = session.save(everything=True)
    data = yaml.safe_load((dask_config / "coiled.yaml").read_text())
    assert data["coiled"]["backend-options"]["ingress"] == [
        {"ports": [8786, 8787], "cidr": "0.0.0.0/0"}
    ]
    assert data["coiled"]["use_scheduler_public_ip"] is False
    assert saved.to_payload()["notes"] == [
        "pinned the rules from built-in default as they are now; later changes there no longer "
        "reach this copy."
    ]
    session.reset()
    with pytest.raises(CoiledJupyterError, match="nothing to save.*everything=True"):
        session.save()


def test_the_team_defaults_are_no_news_but_rules_replacing_them_are(cloud, dask_config):
    from coiled_jupyter.provision import account

    account.set_backend_options(ingress=[{"ports": [8786], "cidr": "10.9.0.0/16"}])
    assert not [n for n in session.show("team").to_payload()["notes"] if "replace" in n]
    view = session.set_settings([VPN], cluster="team")
    [note] = [n for n in view.to_payload()["notes"] if "replace" in n]
    assert note.startswith(
        "the rules from notebook session (this kernel) replace those of the account default "
        "(SSM /coiled-jupyter/backend-options) (tcp 8786 from 10.9.0.0/16), and of the built-in "
        "default (tcp 8786-8787 from 0.0.0.0/0)"
    )
    assert note in session.plan("team").notes
