"""Settings work makes no cloud call and starts no server (issue #9, item 4).

Show, add, remove, set, clear, reset, the toggle and saving to the user file take the account layer
as this process last read or wrote it. When it was not read, the settings view says so, and an edit
whose result it could widen is refused with the way to read it. A plan, an apply or a describe reads
the account store and remembers what it read, with the time.

The team's defaults are put into the sandbox's SSM with the tests' own boto3 client, as another
member's kernel would have written them, so this process has not seen them.
"""

from __future__ import annotations

import json
import re

import pytest
import yaml

from coiled_jupyter import session
from coiled_jupyter.errors import CoiledJupyterError
from coiled_jupyter.provision import account
from coiled_jupyter.settings import SESSION, Layer

PARAMETER = "/coiled-jupyter/backend-options"
TEAM = {
    "ingress": [{"ports": [8786, 8787], "cidr": "10.1.0.0/16", "description": "company VPN"}],
    "use_scheduler_public_ip": False,
}
READ_AT = re.compile(r"^read at \d\d:\d\d:\d\d UTC$")


@pytest.fixture
def team_defaults(cloud, dask_config):
    """The team's account defaults, written by someone else: this process has not read them."""
    cloud.ssm.put_parameter(Name=PARAMETER, Value=json.dumps(TEAM), Type="String")
    return cloud


@pytest.fixture
def no_sandbox_running(tmp_path, dask_config):
    """A state folder where no sandbox runs: settings work must not start one."""
    import dask.config

    from coiled_jupyter.provision import sandbox

    with dask.config.set({"coiled-jupyter.sandbox.state-dir": str(tmp_path / "state")}):
        yield
        assert sandbox.running() is None


@pytest.fixture
def aws_backend(aws_backend_on_sandbox, cloud, dask_config, monkeypatch):
    """The ``aws`` backend redirected to the sandbox, keys in the environment as a profile-less
    kernel has them."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLEKEYID9999")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "je7MtGbClwBF/2Zp9Utk/h3yCo8nvbEXAMPLEKEY")
    return cloud


def account_line(view) -> str:
    lines = repr(view.expanded()).splitlines()  # the layers are among the details
    [line] = [line.strip() for line in lines if line.startswith("  layer account default:")]
    return line


def rules_of(view) -> list[tuple[str, str, str]]:
    return [(r.ports, r.source, r.description) for r in view.settings.rules]


def test_settings_work_makes_no_cloud_call(team_defaults, dask_config, api_calls):
    api_calls.clear()
    session.show()
    session.add(9000, "10.9.0.0/16")
    session.remove(9000, "10.9.0.0/16")
    session.set_settings([{"ports": [8786], "cidr": "10.2.0.0/16"}])
    session.set_scheduler_ip("private")
    session.save("user")
    session.clear()
    session.reset()
    assert dict(api_calls) == {}
    assert (dask_config / "coiled.yaml").exists()


def test_the_view_says_the_account_defaults_were_not_read(team_defaults):
    view = session.show()
    assert not view.settings.account_read
    assert view.settings.ingress.layer is Layer.DEFAULT  # what can be known without a call
    assert account_line(view) == (
        "layer account default: not read: settings work makes no cloud call; a plan or an apply "
        "reads it"
    )
    assert (
        "the account defaults were not read here (settings work makes no cloud call): if your "
        "team set some, they apply instead of the built-in default shown for the rules and "
        "use_scheduler_public_ip. A plan or an apply reads them and names what is replaced."
    ) in view.to_payload()["notes"]
    assert "not read" in view._repr_mimebundle_()["text/html"]


def test_a_plan_reads_them_and_settings_work_then_knows_them(team_defaults, api_calls):
    api_calls.clear()
    plan = session.plan()
    assert api_calls["ssm:GetParameter"] == 1
    assert plan.origin.startswith("account default")
    api_calls.clear()
    view = session.show()
    assert dict(api_calls) == {}
    assert view.settings.account_read
    assert view.settings.ingress.layer is Layer.ACCOUNT
    assert view.settings.use_scheduler_public_ip.value is False
    note = account_line(view).split("(")[-1].rstrip(")")
    assert READ_AT.match(note), account_line(view)
    assert not [n for n in view.to_payload()["notes"] if "not read" in n]
    # add now builds on the team's rules, still without a call
    view = session.add(8786, "10.3.0.0/16", description="data team VPN")
    assert dict(api_calls) == {}
    assert rules_of(view) == [
        ("8786", "10.1.0.0/16", "company VPN"),
        ("8786", "10.3.0.0/16", "data team VPN"),
        ("8787", "10.1.0.0/16", "company VPN"),
    ]


def test_add_over_unread_defaults_declares_only_the_persons_rule_and_the_plan_names_theirs(
    team_defaults,
):
    view = session.add(8786, "10.3.0.0/16")
    assert rules_of(view) == [("8786", "10.3.0.0/16", "")]  # never the built-in 0.0.0.0/0
    assert (
        "the account defaults were not read here (settings work makes no cloud call): if your "
        "team set some, they apply instead of the built-in default shown for "
        "use_scheduler_public_ip, and the rules from notebook session (this kernel) replace "
        "their rules. A plan or an apply reads them and names what is replaced."
    ) in view.to_payload()["notes"]
    [replaced] = [n for n in session.plan().notes if "replace those of" in n]
    assert (
        "account default (SSM /coiled-jupyter/backend-options) (tcp 8786-8787 from 10.1.0.0/16"
        in (replaced)
    )


def test_remove_over_unread_defaults_is_refused_until_they_are_read(team_defaults, api_calls):
    before = SESSION.values
    api_calls.clear()
    with pytest.raises(CoiledJupyterError) as info:
        session.remove(8787, "0.0.0.0/0")
    assert dict(api_calls) == {}
    assert SESSION.values == before
    assert "account defaults were not read" in str(info.value)
    assert "%coiled_ingress plan" in str(info.value)
    session.plan()
    view = session.remove(8787, "10.1.0.0/16")
    assert rules_of(view) == [("8786", "10.1.0.0/16", "company VPN")]


def test_remove_from_the_built_in_default_of_a_stopped_sandbox_needs_no_read(no_sandbox_running):
    view = session.remove(8787, "0.0.0.0/0")
    assert rules_of(view) == [("8786", "0.0.0.0/0", "")]
    assert account_line(view) == (
        "layer account default: sets nothing (the local sandbox is not running, so it holds none)"
    )


def test_pinning_everything_waits_for_a_read(team_defaults, dask_config):
    with pytest.raises(CoiledJupyterError, match="world-open built-in default"):
        session.save(everything=True)
    assert not (dask_config / "coiled.yaml").exists()
    session.plan()
    session.save(everything=True)
    data = yaml.safe_load((dask_config / "coiled.yaml").read_text())["coiled"]
    assert data["backend-options"]["ingress"] == TEAM["ingress"]
    assert data["use_scheduler_public_ip"] is False


def test_defaults_this_process_wrote_are_known_as_written(cloud, dask_config, api_calls):
    account.set_backend_options(**TEAM)
    api_calls.clear()
    view = session.show()
    assert dict(api_calls) == {}
    assert view.settings.ingress.origin == f"account default (SSM {PARAMETER})"
    assert re.search(r"\(written at \d\d:\d\d:\d\d UTC\)$", account_line(view))


def test_a_later_read_replaces_what_was_remembered(team_defaults):
    session.plan()
    narrower = {"ingress": [{"ports": [8786], "cidr": "10.1.7.0/24"}]}
    team_defaults.ssm.put_parameter(
        Name=PARAMETER, Value=json.dumps(narrower), Type="String", Overwrite=True
    )
    # Settings work still shows what was read, and says when; the next plan reads the change.
    assert rules_of(session.show())[0][1] == "10.1.0.0/16"
    assert [str(rule) for rule in session.plan().add] == ["tcp 8786 from 10.1.7.0/24"]
    assert rules_of(session.show()) == [("8786", "10.1.7.0/24", "")]


def test_a_reset_sandbox_forgets_what_was_read(team_defaults):
    from coiled_jupyter.provision import sandbox

    session.plan()
    assert session.show().settings.account_read
    sandbox.reset()
    assert not session.show().settings.account_read


def test_another_aws_environment_is_another_account(aws_backend, monkeypatch):
    aws_backend.ssm.put_parameter(Name=PARAMETER, Value=json.dumps(TEAM), Type="String")
    session.plan()
    assert session.show().settings.ingress.layer is Layer.ACCOUNT
    monkeypatch.setenv("AWS_PROFILE", "another-account")
    view = session.show()
    assert not view.settings.account_read
    assert view.settings.ingress.layer is Layer.DEFAULT


def test_the_plan_says_what_the_team_changed_since_add_copied_their_rules(team_defaults):
    session.plan()
    session.add(9000, "10.9.0.0/16", description="mine")
    narrower = {
        "ingress": [
            {"ports": [8786], "cidr": "10.1.0.0/16", "description": "company VPN"},
            {"ports": [8786], "cidr": "10.5.0.0/16", "description": "new office"},
        ]
    }
    team_defaults.ssm.put_parameter(
        Name=PARAMETER, Value=json.dumps(narrower), Type="String", Overwrite=True
    )
    plan = session.plan()
    [drift] = [n for n in plan.notes if "were built on the account defaults" in n]
    assert re.fullmatch(
        r"the rules from notebook session \(this kernel\) were built on the account defaults as "
        r"known then \(read at \d\d:\d\d:\d\d UTC\), and they no longer have tcp 8787 from "
        r"10\.1\.0\.0/16, which this session still admits, and they now have tcp 8786 from "
        r"10\.5\.0\.0/16, which this session does not: the session's "
        r"rules are what apply, and a reset takes the team's rules as they are now\.",
        drift,
    )
    assert drift in session.show().to_payload()["notes"]  # the view knows the new read too
    session.reset()
    assert not [n for n in session.plan().notes if "were built on" in n]


def test_rules_written_whole_carry_no_drift_note(team_defaults):
    session.plan()
    session.add(9000, "10.9.0.0/16")
    session.set_settings([{"ports": [9000], "cidr": "10.9.0.0/16"}])
    team_defaults.ssm.put_parameter(
        Name=PARAMETER, Value=json.dumps({"ingress": []}), Type="String", Overwrite=True
    )
    assert not [n for n in session.plan().notes if "were built on" in n]
