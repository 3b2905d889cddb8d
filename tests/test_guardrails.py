"""Team guardrails enforced: kept in the account store, checked by every plan and apply of everyone
who reads it, before any write; overrides tagged on the rules and shown afterwards.

The store is the sandbox's SSM; the second team member is a second process with its own Python state,
reading the same store.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
from IPython.core.error import UsageError

from coiled_jupyter import session
from coiled_jupyter.errors import CoiledJupyterError

WRITES = {
    "ec2:CreateSecurityGroup",
    "ec2:AuthorizeSecurityGroupIngress",
    "ec2:RevokeSecurityGroupIngress",
    "ec2:ModifySecurityGroupRules",
}


def _in_other_process(code: str) -> str:
    """Run ``code`` in a fresh Python process on the same sandbox; its stdout."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ),
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_a_guardrail_set_in_one_process_refuses_another_process_plan_before_any_write(
    sandbox, dask_config, api_calls
):
    _in_other_process(
        """
        import coiled_jupyter
        coiled_jupyter.set_guardrails(no_world="8786-8787")
        """
    )
    session.add(8786, "everyone", cluster="team")
    api_calls.clear()
    with pytest.raises(CoiledJupyterError) as caught:
        session.apply("team")
    sentence = str(caught.value)
    assert "guardrail no-world (ports 8786-8787 never open to the world" in sentence
    assert "set by arn:aws:" in sentence and " UTC" in sentence
    assert "tcp 8786 from 0.0.0.0/0" in sentence and "tcp 8786 from ::/0" in sentence
    assert "--override-guardrail no-world --reason TEXT" in sentence
    assert not WRITES & set(api_calls), api_calls


def test_the_other_process_is_refused_by_a_guardrail_set_here(sandbox, dask_config):
    session.set_guardrails(within="10.0.0.0/8")
    out = _in_other_process(
        """
        from coiled_jupyter import session
        from coiled_jupyter.errors import CoiledJupyterError
        session.add(8786, "192.168.0.0/16", cluster="team")
        try:
            session.plan("team")
        except CoiledJupyterError as error:
            print("REFUSED", error)
        """
    )
    assert out.startswith("REFUSED") and "guardrail within" in out


def test_halves_of_the_internet_are_caught_after_compaction(sandbox, dask_config):
    session.set_guardrails(no_world=8786)
    session.set_settings([{"ports": [8786], "cidr": ["0.0.0.0/1", "128.0.0.0/1"]}], cluster="c")
    with pytest.raises(CoiledJupyterError, match="tcp 8786 from 0.0.0.0/0"):
        session.plan("c")


def test_an_override_is_tagged_shown_and_kept_by_later_plans(sandbox, dask_config, api_calls):
    session.set_guardrails(no_world="8786", max_rules=5)
    session.set_settings([{"ports": [8786], "cidr": "0.0.0.0/0"}], cluster="debug")
    applied = session.apply("debug", override_guardrails={"no-world": "vendor debugging"})
    assert "overrides guardrail no-world: vendor debugging" in repr(applied)
    described = repr(session.describe("debug"))
    assert "overrides guardrail no-world: vendor debugging" in described
    # Another change later, without the override: the tagged rule keeps its override.
    session.add(8787, "10.1.0.0/16", cluster="debug")
    planned = session.plan("debug")
    assert any("keeps its earlier override of guardrail no-world" in n for n in planned.notes)
    # A new rule that breaks it again is refused: here 8787 from the world, which compaction
    # joins with the overridden rule into a new one.
    session.add(8787, "everyone", cluster="debug")
    with pytest.raises(CoiledJupyterError, match="tcp 8786-8787 from 0.0.0.0/0"):
        session.plan("debug")


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        ({"no-world": ""}, "needs --reason"),
        ({"no-wrld": "x"}, "no guardrail 'no-wrld'"),
        ({"within": "x"}, "overrides nothing"),
    ],
)
def test_a_wrong_override_is_refused(sandbox, dask_config, overrides, words):
    session.set_guardrails(no_world="8786")
    session.add(8786, "everyone", cluster="c")
    with pytest.raises(CoiledJupyterError, match=words):
        session.plan("c", override_guardrails=overrides)


def test_a_store_with_a_broken_guardrail_is_refused_not_ignored(sandbox, dask_config):
    from coiled_jupyter.provision.account import account_store
    from coiled_jupyter.provision.target import target

    t = target().connected()
    account_store(t).store(
        {"coiled-jupyter-guardrails": [{"name": "no-world", "value": ["eighty"]}]}
    )
    session.add(8786, "everyone", cluster="c")
    with pytest.raises(CoiledJupyterError, match="guardrail no-world"):
        session.plan("c")


def test_set_backend_options_keeps_the_guardrails(sandbox, dask_config):
    import coiled_jupyter

    session.set_guardrails(max_rules=3)
    coiled_jupyter.set_backend_options(ingress=[{"ports": [8786], "cidr": "10.1.0.0/16"}])
    assert [rail.name for rail in session.guardrails().rails] == ["max-rules"]


# --------------------------------------------------------------------------------------------------
# Front ends: magics, panel, REST


def test_magics_set_show_and_override_guardrails(ip, sandbox, dask_config):
    ip.run_line_magic("coiled_ingress", "guard no-world 8786,8787")
    shown = ip.run_line_magic("coiled_ingress", "guard")
    assert "ports 8786, 8787 never open to the world" in repr(shown)
    ip.run_line_magic("coiled_ingress", "add 8786 everyone --cluster m")
    with pytest.raises(UsageError, match="guardrail no-world"):
        ip.run_line_magic("coiled_ingress", "plan --cluster m")
    with pytest.raises(UsageError, match="its own --reason"):
        ip.run_line_magic("coiled_ingress", "plan --cluster m --override-guardrail no-world")
    planned = ip.run_line_magic(
        "coiled_ingress", "plan --cluster m --override-guardrail no-world --reason 'demo day'"
    )
    assert any("overridden" in n and "demo day" in n for n in planned.notes)
    with pytest.raises(UsageError, match="no guardrail 'no-wrld'"):
        ip.run_line_magic("coiled_ingress", "guard no-wrld 1")
    ip.run_line_magic("coiled_ingress", "guard clear all")
    assert session.guardrails().rails == ()


def test_the_panel_plan_shows_the_guardrail_sentence(sandbox, dask_config):
    from coiled_jupyter.widgets import FirewallPanel

    session.set_guardrails(no_world="8786")
    session.add(8786, "everyone", cluster="panel")
    panel = FirewallPanel(cluster="panel", background=False)
    panel.plan()
    assert "guardrail no-world" in panel.status.value
