"""The IPython magics in a real in-process IPython shell, against the sandbox (a moto server).

Every mistake a person can type must fail the cell with a plain UsageError (the exact class: IPython
shows a traceback for subclasses) carrying the project's one sentence, and must change nothing: not the
session layer, not the kernel's Dask config, not the config file, not the cloud, and make no cloud call.
"""

from __future__ import annotations

import copy
import json
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import dask.config
import pytest
from IPython.core.error import UsageError

ROOT = Path(__file__).resolve().parents[1]

SNIPPET = """\
coiled:
  backend-options:
    ingress:
      - ports: [8786, 8787]
        cidr: 10.1.0.0/16
        description: VPN
      - ports: [8786]
        cidr: 10.2.0.0/16
        description: peered VPC
  use_scheduler_public_ip: false
"""


# --------------------------------------------------------------------------------------------------
# Fixtures and helpers


@pytest.fixture
def config_file(monkeypatch, tmp_path):
    """A Dask config folder of this test's own, so that saving touches nothing else."""
    folder = tmp_path / "dask"
    folder.mkdir()
    monkeypatch.setenv("DASK_CONFIG", str(folder))
    return folder / "coiled.yaml"


def line(ip, text):
    return ip.run_line_magic("coiled_ingress", text)


def session(cluster=None):
    """The session layer of ``cluster`` (None: the default cluster)."""
    from coiled_jupyter.settings import SESSION

    return SESSION.layer(cluster)


def rules_of(result) -> list[tuple[str, str, str]]:
    return [(r.protocol, r.ports, r.source) for r in result.rules]


def cloud_state() -> dict:
    """Every group and SSM parameter in the sandbox."""
    from coiled_jupyter.provision import aws
    from coiled_jupyter.provision.target import target

    connection = target().connection()
    groups = aws.client("ec2", connection).describe_security_groups()["SecurityGroups"]
    ssm = aws.client("ssm", connection)
    names = [p["Name"] for p in ssm.describe_parameters().get("Parameters", [])]
    values = {n: ssm.get_parameter(Name=n)["Parameter"]["Value"] for n in names}
    return {"groups": sorted(groups, key=lambda g: g["GroupId"]), "parameters": values}


def local_state(config_file: Path) -> dict:
    layer = session()
    return {
        "session": (layer.ingress, layer.use_scheduler_public_ip),
        "dask": copy.deepcopy(dask.config.get("coiled", default={})),
        "file": config_file.read_text() if config_file.exists() else None,
    }


# --------------------------------------------------------------------------------------------------
# Loading


def test_load_ext_is_light():
    """%load_ext imports neither boto3, moto nor distributed (they load on first use)."""
    code = textwrap.dedent("""
        import sys
        from IPython.core.interactiveshell import InteractiveShell
        ip = InteractiveShell.instance()
        ip.run_line_magic("load_ext", "coiled_jupyter")
        ip.run_line_magic("coiled_ingress", "--help")
        ip.run_line_magic("coiled_firewall", "--help")
        assert ip.find_line_magic("coiled_ingress") is not None
        print([m for m in ("boto3", "botocore", "moto", "distributed") if m in sys.modules])
    """)
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
        timeout=60,
    )
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_load_and_unload(shell):
    from coiled_jupyter.magics import CoiledMagics

    shell.run_line_magic("load_ext", "coiled_jupyter")
    try:
        for name in ("coiled_ingress", "coiled_scheduler_ip", "coiled_firewall"):
            assert shell.find_line_magic(name) is not None
        assert shell.find_cell_magic("coiled_ingress") is not None
        assert any(isinstance(c, CoiledMagics) for c in shell.configurables)
        assert "%coiled_ingress" in shell.strdispatchers["complete_command"].strs
    finally:
        shell.run_line_magic("unload_ext", "coiled_jupyter")
    for name in ("coiled_ingress", "coiled_scheduler_ip", "coiled_firewall"):
        assert shell.find_line_magic(name) is None
    assert shell.find_cell_magic("coiled_ingress") is None
    assert not any(isinstance(c, CoiledMagics) for c in shell.configurables)
    assert "%coiled_ingress" not in shell.strdispatchers["complete_command"].strs
    assert "CoiledMagics" not in dict(shell.magics_manager.registry)
    with pytest.raises(UsageError, match="not found"):
        shell.run_line_magic("coiled_ingress", "")
    # And it loads again, and reloads without registering twice.
    shell.run_line_magic("load_ext", "coiled_jupyter")
    try:
        shell.run_line_magic("reload_ext", "coiled_jupyter")
        assert shell.find_line_magic("coiled_ingress") is not None
        assert len([c for c in shell.configurables if isinstance(c, CoiledMagics)]) == 1
        assert len(shell.strdispatchers["complete_command"].strs["%coiled_ingress"].chain) == 1
    finally:
        shell.run_line_magic("unload_ext", "coiled_jupyter")


# --------------------------------------------------------------------------------------------------
# Showing and changing the session


def test_show_settings(ip, sandbox):
    from coiled_jupyter.display import MIMETYPE
    from coiled_jupyter.provision.results import SettingsView

    view = line(ip, "")
    assert isinstance(view, SettingsView)
    assert view.settings.ingress.origin == "built-in default"
    assert rules_of(view.settings) == [("tcp", "8786", "0.0.0.0/0"), ("tcp", "8787", "0.0.0.0/0")]
    assert view.reachability is not None
    bundle = view._repr_mimebundle_()
    assert {"text/plain", "text/html", MIMETYPE} <= set(bundle)


def test_add_over_the_built_in_default_replaces_it(ip, sandbox):
    # As in Coiled, declaring ingress replaces the world-open default: it must not stay beside
    # (or swallow) the person's rule.
    view = line(ip, 'add 8786,8787 10.1.0.0/16 --description "office VPN"')
    assert view.settings.ingress.origin == "notebook session (this kernel)"
    assert rules_of(view.settings) == [
        ("tcp", "8786", "10.1.0.0/16"),
        ("tcp", "8787", "10.1.0.0/16"),
    ]
    assert {r.description for r in view.settings.rules} == {"office VPN"}
    # The session builds up; Coiled never reads ingress from Dask config, so none is put there.
    view = line(ip, "add 8000-8100 203.0.113.7 --protocol udp")
    assert ("udp", "8000-8100", "203.0.113.7/32") in rules_of(view.settings)
    assert ("tcp", "8786", "10.1.0.0/16") in rules_of(view.settings)
    assert dask.config.get("coiled.backend-options.ingress", default=None) is None


def test_add_starts_from_the_rules_of_the_config_file(ip, sandbox, config_file):
    config_file.write_text(
        "coiled:\n  backend-options:\n    ingress: [{ports: [22], cidr: 10.9.0.0/16}]\n"
    )
    view = line(ip, "add 8786 10.1.0.0/16")
    assert rules_of(view.settings) == [("tcp", "22", "10.9.0.0/16"), ("tcp", "8786", "10.1.0.0/16")]


def test_add_symbolic_sources(ip, sandbox):
    line(ip, "clear")
    view = line(ip, "add 8786 me")
    assert rules_of(view.settings) == [("tcp", "8786", "me")]
    view = line(ip, "add 8787 everyone")
    assert ("tcp", "8787", "::/0") in rules_of(view.settings)
    view = line(ip, "add 8786 sg-0123456789abcdef0")
    assert ("tcp", "8786", "sg-0123456789abcdef0") in rules_of(view.settings)


def test_remove(ip, sandbox):
    # Over the built-in default, what is left of 0.0.0.0/0 would replace any team rules, which
    # settings work does not read: refused until a plan has read them.
    with pytest.raises(UsageError, match="account defaults were not read"):
        line(ip, "remove 8786,8787 everyone")
    line(ip, "plan")
    view = line(ip, "remove 8786,8787 everyone")  # the built-in default holds only 0.0.0.0/0
    assert rules_of(view.settings) == []
    line(ip, "set [{ports: ['8000-8010'], cidr: 10.1.0.0/16}, {ports: [8786], cidr: 10.2.0.0/16}]")
    view = line(ip, "remove 8005 10.1.0.0/16")
    assert rules_of(view.settings) == [
        ("tcp", "8000-8004", "10.1.0.0/16"),
        ("tcp", "8006-8010", "10.1.0.0/16"),
        ("tcp", "8786", "10.2.0.0/16"),
    ]
    view = line(ip, "remove 8786 10.2.0.0/16")
    assert ("tcp", "8786", "10.2.0.0/16") not in rules_of(view.settings)


def test_set_yaml_json_and_snippet(ip, sandbox):
    view = line(ip, "set [{ports: [8786, 8787], cidr: 10.1.0.0/16}]")
    assert rules_of(view.settings) == [
        ("tcp", "8786", "10.1.0.0/16"),
        ("tcp", "8787", "10.1.0.0/16"),
    ]
    view = line(ip, 'set [{"ports": [8786], "cidr": "10.2.0.0/16", "description": "a: b"}]')
    assert rules_of(view.settings) == [("tcp", "8786", "10.2.0.0/16")]
    assert view.settings.rules[0].description == "a: b"
    view = line(
        ip,
        "set --cluster other {ingress: [{ports: [8786], cidr: 10.3.0.0/16}], "
        "use_scheduler_public_ip: false}",
    )
    assert view.target.cluster == "other"
    assert rules_of(view.settings) == [("tcp", "8786", "10.3.0.0/16")]
    assert view.settings.use_scheduler_public_ip.value is False
    view = line(ip, "set [{ports: [8786], cidr: 10.4.0.0/16}] --cluster third")
    assert view.target.cluster == "third"
    assert rules_of(view.settings) == [("tcp", "8786", "10.4.0.0/16")]


def test_clear_and_reset(ip, sandbox):
    view = line(ip, "clear")
    assert rules_of(view.settings) == []
    assert session().ingress == []
    assert "(no inbound rules)" in repr(view)
    ip.run_line_magic("coiled_scheduler_ip", "private")
    view = line(ip, "reset")
    assert session().ingress is None and session().use_scheduler_public_ip is None
    assert view.settings.ingress.origin == "built-in default"
    assert view.settings.use_scheduler_public_ip.value is True


def test_plan_apply_describe_destroy(ip, sandbox):
    from coiled_jupyter.provision.results import ApplyResult, DestroyResult, Plan, RuleTable

    line(ip, "set [{ports: [8786, 8787], cidr: 10.1.0.0/16}] --cluster magic-test")
    plan = line(ip, "plan --cluster magic-test")
    assert isinstance(plan, Plan) and plan.create and plan.target.cluster == "magic-test"
    applied = line(ip, "apply --cluster magic-test")
    assert isinstance(applied, ApplyResult) and applied.changed
    assert ("tcp", "8786-8787", "10.1.0.0/16") in rules_of(applied.table)
    assert "no change" in repr(line(ip, "plan --cluster magic-test"))
    assert not line(ip, "apply --cluster magic-test").changed
    table = line(ip, "describe -c magic-test")
    assert isinstance(table, RuleTable) and table.group_id == applied.table.group_id
    assert "<td>8786-8787</td>" in table._repr_mimebundle_()["text/html"]
    gone = line(ip, "destroy --cluster magic-test")
    assert isinstance(gone, DestroyResult) and gone.deleted
    assert not line(ip, "describe --cluster magic-test").exists


def test_return_values_are_assignable(ip, sandbox):
    from coiled_jupyter.provision.results import ApplyResult, RuleTable, SettingsView

    result = ip.run_cell(
        "t = %coiled_ingress describe --cluster assign\n"
        "a = %coiled_ingress apply --cluster assign\n"
        "s = %coiled_scheduler_ip"
    )
    result.raise_error()
    assert isinstance(ip.user_ns["t"], RuleTable)
    assert isinstance(ip.user_ns["a"], ApplyResult)
    assert isinstance(ip.user_ns["s"], SettingsView)


def test_save_user_scope(ip, sandbox, config_file):
    import yaml

    config_file.write_text("# my settings\ndistributed:\n  scheduler:\n    work-stealing: false\n")
    line(ip, "set [{ports: [8786, 8787], cidr: 10.1.0.0/16}]")
    ip.run_line_magic("coiled_scheduler_ip", "private")
    saved = line(ip, "save")
    assert saved.scope == "user" and saved.location == str(config_file)
    assert str(config_file) in repr(saved)
    text = config_file.read_text()
    assert text.startswith("# my settings")
    data = yaml.safe_load(text)
    assert data["distributed"]["scheduler"]["work-stealing"] is False
    assert data["coiled"]["backend-options"]["ingress"] == [
        {"ports": [8786, 8787], "cidr": "10.1.0.0/16"}
    ]
    assert data["coiled"]["use_scheduler_public_ip"] is False
    # Without the session, the file is where the settings come from.
    view = line(ip, "reset")
    assert view.settings.ingress.origin == f"dask config ({config_file})"
    assert view.settings.use_scheduler_public_ip.value is False


def test_save_account_scope(ip, sandbox, config_file):
    line(ip, "set [{ports: [8786], cidr: 10.5.0.0/16}]")
    saved = line(ip, "save --scope account")
    assert saved.scope == "account" and "SSM" in saved.location
    assert not config_file.exists()
    view = line(ip, "reset")
    assert view.settings.ingress.layer.label == "account default"
    assert rules_of(view.settings) == [("tcp", "8786", "10.5.0.0/16")]
    planned = line(ip, "plan --cluster saved-for-team")
    assert planned.origin.startswith("account default")
    assert [(r.ports, r.source) for r in planned.add] == [("8786", "10.5.0.0/16")]


# --------------------------------------------------------------------------------------------------
# The cell magic


def test_cell_with_coiled_snippet(ip, sandbox):
    from coiled_jupyter.provision.results import SettingsView

    view = ip.run_cell_magic("coiled_ingress", "--cluster vpn", SNIPPET)
    assert isinstance(view, SettingsView) and view.target.cluster == "vpn"
    assert rules_of(view.settings) == [
        ("tcp", "8786", "10.1.0.0/16"),
        ("tcp", "8786", "10.2.0.0/16"),
        ("tcp", "8787", "10.1.0.0/16"),
    ]
    assert view.settings.use_scheduler_public_ip.value is False
    # Dask's key holds the default cluster's toggle only; vpn's reaches Coiled as cluster_kwargs('vpn').
    assert dask.config.get("coiled.use_scheduler_public_ip", None) is None
    assert session("vpn").ingress is not None and session().ingress is None


def test_cell_with_rule_list_and_apply(ip, sandbox):
    from coiled_jupyter.provision.results import ApplyResult

    body = "- ports: [8786, 8787]\n  cidr: 10.1.0.0/16\n"
    result = ip.run_cell_magic("coiled_ingress", "--apply --cluster cell-apply", body)
    assert isinstance(result, ApplyResult) and result.changed
    assert ("tcp", "8786-8787", "10.1.0.0/16") in rules_of(result.table)
    again = ip.run_cell_magic("coiled_ingress", "--apply --cluster cell-apply", body)
    assert not again.changed


def test_variables_in_cell_and_line(ip, sandbox):
    ip.user_ns.update(
        cidr="10.7.0.0/16", name="vars", port=8786, more=[{"ports": [8787], "cidr": "10.8.0.0/16"}]
    )
    body = "- ports: [${port}]\n  cidr: ${cidr}\n  description: costs $$5\n"
    view = ip.run_cell_magic("coiled_ingress", "--cluster ${name}", body)
    assert view.target.cluster == "vars"
    assert rules_of(view.settings) == [("tcp", "8786", "10.7.0.0/16")]
    assert view.settings.rules[0].description == "costs $5"
    view = line(ip, "add 8787 $cidr --cluster ${name}")
    assert ("tcp", "8787", "10.7.0.0/16") in rules_of(view.settings)
    view = line(ip, "set ${more}")
    assert rules_of(view.settings) == [("tcp", "8787", "10.8.0.0/16")]
    # IPython's own {expr} and $name expansion is off: it would mangle YAML flow mappings.
    ip.user_ns["ports"] = "oops"
    view = line(ip, "set [{ports: [8786], cidr: 10.1.0.0/16}]")
    assert rules_of(view.settings) == [("tcp", "8786", "10.1.0.0/16")]
    with pytest.raises(UsageError, match="cidr '{cidr}', which is not an IP network"):
        line(ip, "add 8786 {cidr}")


def test_scheduler_ip(ip, sandbox):
    from coiled_jupyter.provision.results import SettingsView

    view = ip.run_line_magic("coiled_scheduler_ip", "")
    assert isinstance(view, SettingsView)
    assert view.settings.use_scheduler_public_ip.origin == "built-in default"
    view = ip.run_line_magic("coiled_scheduler_ip", "private")
    assert view.settings.use_scheduler_public_ip.value is False
    assert view.settings.use_scheduler_public_ip.origin == "notebook session (this kernel)"
    assert dask.config.get("coiled.use_scheduler_public_ip") is False
    # The ingress of the session is not touched by the toggle.
    assert session().ingress is None
    ip.run_line_magic("coiled_scheduler_ip", "PUBLIC")
    assert dask.config.get("coiled.use_scheduler_public_ip") is True


# --------------------------------------------------------------------------------------------------
# Mistakes: one sentence, a plain UsageError, nothing changed, no cloud call


@pytest.fixture
def prepared(ip, sandbox, config_file, api_calls):
    """A session with rules, an applied cluster, and a saved config file."""
    line(ip, "set [{ports: [8786, 8787], cidr: 10.1.0.0/16}]")
    line(ip, "apply --cluster errors")
    line(ip, "save")
    line(ip, "set [{ports: [8786, 8787], cidr: 10.1.0.0/16}]")  # mirrors the saved file's toggle
    ip.user_ns.pop("office", None)
    return ip


MISTAKES = [
    ("line", "add 70000 10.1.0.0/16", "rule has port 70000, outside 1-65535"),
    ("line", "add 8786 10.1.0.2/16", "rule has cidr '10.1.0.2/16' with host bits set"),
    ("line", "add 8786 10.1.0.0/16 --protocol icmp", "rule has protocol 'icmp'; use 'tcp'"),
    ("line", "add 8786,x 10.1.0.0/16", "rule has port 'x', which is not a port"),
    ("line", "add 8786 10.1.0.0/16 office", "also got 'office'"),
    ("line", "add 8786", "needs PORTS and SOURCE but got only '8786'"),
    ("line", "add 8786, 8787 10.1.0.0/16", "write them without spaces, e.g. '8786,8787'"),
    ("line", "ad 8786 10.1.0.0/16", "%coiled_ingress has no subcommand 'ad'; did you mean 'add'?"),
    ("line", "add 8786 ${office}", "variable 'office' in the magic's line is not defined"),
    ("line", "add 8786 10.1.0.0/16 --description 'costs $5'", "does not start a variable"),
    ("line", "add 8786 10.1.0.0/16 --description 'unclosed", "quote that is not closed"),
    (
        "line",
        "remove 8786 10.9.0.0/16",
        "cannot remove tcp 8786 from 10.9.0.0/16: it is not in "
        "the effective rules (from notebook session (this kernel)), which are: tcp 8786 from "
        "10.1.0.0/16, tcp 8787 from 10.1.0.0/16.",
    ),
    ("line", "remove 8786 10.1.0.0/16 --protocol udp", "cannot remove udp 8786 from 10.1.0.0/16"),
    (
        "line",
        "set [{ports: [8786], cidr: 10.1.0.0/16}, {ports: [0], cidr: 10.2.0.0/16}]",
        "ingress rule 2 has port 0, outside 1-65535",
    ),
    ("line", "set [{ports: [8786], cidr: 10.1.0.0/16", "could not be read"),
    ("line", "set", "%coiled_ingress set needs the rules"),
    ("line", "set {coiled: {backend-option: {ingress: []}}}", "did you mean 'backend-options'?"),
    (
        "line",
        "plan prod",
        "takes no arguments but got 'prod'; to name a cluster write --cluster prod",
    ),
    ("line", "plan --description x", "%coiled_ingress plan does not take --description"),
    ("line", "apply --apply", "it is for undo and the %%coiled_ingress cell"),
    ("line", "save --scope team", "scope 'team' is not known"),
    ("line", "plan --cluster 'bad name!'", "cluster name 'bad name!' is not valid"),
    ("line", "describe --frobnicate", "unrecognized arguments: --frobnicate"),
    ("scheduler_ip", "publik", "is 'public' or 'private', not 'publik'; did you mean 'public'?"),
    ("scheduler_ip", "public private", "unrecognized arguments"),
    ("cell", "- ports: [8786]\n  cidr: 10.1.0.2/16\n", "host bits set"),
    (
        "cell",
        "- ports: [8786]\n  cidr: ${office}\n",
        "variable 'office' in the cell is not defined",
    ),
    ("cell", SNIPPET.replace("ingress:", "ingres:"), "did you mean 'ingress'?"),
    (
        "cell",
        SNIPPET.replace("use_scheduler_public_ip: false", "use_scheduler_public_ip: maybe"),
        "use_scheduler_public_ip is 'maybe'; use true",
    ),
    ("cell", "# nothing yet\n", "the cell is empty"),
    ("cell-line", "add", "takes only --cluster, --kind and --apply on its first line, not 'add'"),
]


@pytest.mark.parametrize(
    ("kind", "text", "sentence"), MISTAKES, ids=[f"{k}:{t[:40]}" for k, t, _ in MISTAKES]
)
def test_mistakes_change_nothing(prepared, config_file, api_calls, kind, text, sentence):
    ip = prepared
    before_local, before_cloud = local_state(config_file), cloud_state()
    calls = sum(api_calls.values())
    before_calls = dict(api_calls)
    with pytest.raises(UsageError) as raised:
        if kind == "line":
            line(ip, text)
        elif kind == "scheduler_ip":
            ip.run_line_magic("coiled_scheduler_ip", text)
        elif kind == "cell":
            ip.run_cell_magic("coiled_ingress", "--apply --cluster errors", text)
        else:
            ip.run_cell_magic("coiled_ingress", text, "[]")
    assert type(raised.value) is UsageError
    error = raised.value
    assert error.__cause__ is None and (error.__context__ is None or error.__suppress_context__)
    assert sentence in str(raised.value)
    if text.startswith("remove"):
        # Whether a rule can be removed depends on the settings, which are read (only read).
        new = [c for c in api_calls if api_calls[c] != before_calls.get(c, 0)]
        assert not [c for c in new if not c.split(":")[1].startswith(("Describe", "Get"))]
    else:
        assert sum(api_calls.values()) == calls, "a mistake must be refused before any cloud call"
    assert local_state(config_file) == before_local
    assert cloud_state() == before_cloud


def test_quota_is_checked_before_the_cell_changes_anything(prepared, config_file, api_calls):
    ip = prepared
    body = "\n".join(f"- ports: [8786]\n  cidr: 10.{i}.{i}.0/24" for i in range(1, 130, 2))
    before_local, before_cloud = local_state(config_file), cloud_state()
    with pytest.raises(UsageError) as raised:
        ip.run_cell_magic("coiled_ingress", "--apply --cluster errors", body)
    assert type(raised.value) is UsageError
    assert "over the quota of 60" in str(raised.value)
    assert local_state(config_file) == before_local
    assert cloud_state() == before_cloud


def test_cloud_failure_is_a_usage_error_and_the_cell_restores_the_session(prepared, config_file):
    """A group tagged for the cluster but not owned by the tool: the cloud refuses, with its code."""
    from coiled_jupyter.provision import aws
    from coiled_jupyter.provision.target import target

    ec2 = aws.client("ec2", target().connection())
    foreign = ec2.create_security_group(GroupName="someone-elses", Description="not ours")
    ec2.create_tags(
        Resources=[foreign["GroupId"]], Tags=[{"Key": "coiled-jupyter:cluster", "Value": "foreign"}]
    )
    ip = prepared
    before_local, before_cloud = local_state(config_file), cloud_state()
    with pytest.raises(UsageError) as raised:
        line(ip, "apply --cluster foreign")
    assert type(raised.value) is UsageError
    assert str(raised.value).startswith("ForeignGroup: ")
    assert "it is left alone" in str(raised.value)
    with pytest.raises(UsageError) as raised:
        ip.run_cell_magic(
            "coiled_ingress", "--apply --cluster foreign", "- ports: [8786]\n  cidr: 10.9.0.0/16\n"
        )
    assert type(raised.value) is UsageError and str(raised.value).startswith("ForeignGroup: ")
    assert local_state(config_file) == before_local
    assert cloud_state() == before_cloud


def test_botocore_failure_is_a_usage_error_with_its_code(ip, sandbox, monkeypatch, capsys):
    from botocore.exceptions import ClientError

    from coiled_jupyter.provision import aws

    def throttled(self, cluster, vpc_id):
        error = ClientError(
            {"Error": {"Code": "RequestLimitExceeded", "Message": "Request limit exceeded."}},
            "DescribeSecurityGroups",
        )
        raise aws.cloud_error(error, "reading security groups")

    monkeypatch.setattr(aws.SecurityGroups, "find", throttled)
    with pytest.raises(UsageError) as raised:
        line(ip, "plan --cluster throttled")
    assert type(raised.value) is UsageError
    assert str(raised.value) == (
        "RequestLimitExceeded: reading security groups failed: Request "
        "limit exceeded.; AWS is throttling this account; wait a minute "
        "and run it again."
    )
    result = ip.run_cell("%coiled_ingress describe --cluster throttled")
    assert type(result.error_in_exec) is UsageError
    err = capsys.readouterr().err
    assert err.startswith("UsageError: RequestLimitExceeded: ")
    assert "Traceback" not in err and "botocore" not in err


def test_config_file_refused_is_a_usage_error(ip, sandbox, config_file):
    line(ip, "set [{ports: [8786], cidr: 10.1.0.0/16}]")
    # Written after the set: the settings refuse to resolve over it (config_layer).
    config_file.write_text("# hand-written\ncoiled: 5\n")
    before = local_state(config_file)
    with pytest.raises(UsageError) as raised:
        line(ip, "save")
    assert type(raised.value) is UsageError
    assert str(raised.value) == (
        "'coiled' in the Dask config file is not a mapping; fix it by hand, nothing was written."
    )
    assert local_state(config_file) == before


def test_a_failing_cell_shows_one_line_and_no_traceback(ip, capsys):
    result = ip.run_cell("%coiled_ingress add 8786 10.1.0.2/16")
    assert type(result.error_in_exec) is UsageError
    captured = capsys.readouterr()
    assert "UsageError: rule has cidr '10.1.0.2/16' with host bits set" in captured.err
    assert "Traceback" not in captured.err + captured.out
    assert 'File "' not in captured.err + captured.out


# --------------------------------------------------------------------------------------------------
# Options, help and completion


def test_config_magic_sets_the_default_cluster(ip, sandbox):
    ip.run_line_magic("config", 'CoiledMagics.cluster = "prod"')
    assert line(ip, "plan").target.cluster == "prod"
    assert line(ip, "plan --cluster other").target.cluster == "other"
    ip.run_line_magic("config", "CoiledMagics.show_reachability = False")
    assert line(ip, "").reachability is None


def test_config_from_ipython_config(shell, sandbox):
    """``c.CoiledMagics.cluster = ...`` in ipython_config.py reaches the magics."""
    shell.config.CoiledMagics.cluster = "from-config"
    try:
        shell.run_line_magic("load_ext", "coiled_jupyter")
        assert shell.run_line_magic("coiled_ingress", "plan").target.cluster == "from-config"
    finally:
        shell.run_line_magic("unload_ext", "coiled_jupyter")
        shell.config.pop("CoiledMagics", None)


def test_config_lists_the_options(ip, capsys):
    ip.run_line_magic("config", "CoiledMagics")
    out = capsys.readouterr().out
    assert "CoiledMagics.cluster" in out and "CoiledMagics.show_reachability" in out


@pytest.mark.parametrize(
    "how",
    [
        ("line", "-h"),
        ("line", "--help"),
        ("line", "set -h"),
        ("line", "add --help"),
        ("cell", "--help"),
        ("scheduler_ip", "-h"),
    ],
)
def test_help_is_printed(ip, capsys, how):
    kind, text = how
    if kind == "line":
        assert line(ip, text) is None
    elif kind == "cell":
        assert ip.run_cell_magic("coiled_ingress", text, "ignored") is None
    else:
        assert ip.run_line_magic("coiled_scheduler_ip", text) is None
    out = capsys.readouterr().out
    if kind == "scheduler_ip":
        assert out.startswith("%coiled_scheduler_ip") and "public|private" in out
    elif kind == "cell":
        assert out.startswith("%%coiled_ingress [--cluster NAME] [--kind coiled|dask] [--apply]")
        assert "${name}" in out and "use_scheduler_public_ip: false" in out
    elif text.split()[0] in ("set", "add"):
        # The subcommand's own details.
        assert out.startswith(f"%coiled_ingress {text.split()[0]} ")
        assert "--cluster NAME" in out
    else:
        assert out.startswith("%coiled_ingress")
        for word in (
            "add PORTS SOURCE",
            "remove PORTS SOURCE",
            "set RULES",
            "save [--scope user|account]",
            "history",
            "undo [--apply]",
            "%%coiled_ingress [--cluster NAME] [--apply]",
            "${name}",
            "%coiled_ingress -h SUBCOMMAND",
        ):
            assert word in out


def test_help_fits_a_screen_and_details_come_per_subcommand(ip, capsys):
    from coiled_jupyter.magics import SUBCOMMANDS

    assert line(ip, "-h") is None
    overview = capsys.readouterr().out.rstrip("\n").splitlines()
    assert len(overview) <= 25 and max(len(row) for row in overview) <= 100
    for command in SUBCOMMANDS:
        assert line(ip, f"-h {command}") is None
        details = capsys.readouterr().out
        assert details.startswith(f"%coiled_ingress {command}"), command
        assert len(details.splitlines()) <= 25
    assert line(ip, "add -h") is None
    assert capsys.readouterr().out.startswith("%coiled_ingress add PORTS SOURCE")
    with pytest.raises(UsageError, match="has no subcommand 'nope'"):
        line(ip, "-h nope")


def test_question_mark_shows_the_same_help(ip, capsys):
    doc = ip.find_line_magic("coiled_ingress").__doc__
    assert "add PORTS SOURCE" in doc and "--cluster NAME" in doc
    ip.run_cell("%coiled_ingress?")
    out = capsys.readouterr().out
    assert "add PORTS SOURCE" in out


def _complete(ip, text):
    from IPython.core.completer import provisionalcompleter

    with provisionalcompleter():
        return [c.text for c in ip.Completer.completions(text, len(text))]


def test_completion(ip):
    assert _complete(ip, "%coiled_ingress sa") == ["save"]
    assert set(_complete(ip, "%coiled_ingress ")) >= {"add", "remove", "set", "plan", "apply"}
    assert "--description" in _complete(ip, "%coiled_ingress add --d")
    assert set(_complete(ip, "%coiled_ingress save --scope ")) >= {"user", "account"}
    scope_a = _complete(ip, "%coiled_ingress save --scope a")
    assert "account" in scope_a and "user" not in scope_a
    assert _complete(ip, "%coiled_ingress add --protocol u") == ["udp"]
    assert set(_complete(ip, "%coiled_ingress add 8786 ")) >= {"me", "everyone"}
    assert set(_complete(ip, "%coiled_scheduler_ip p")) == {"public", "private"}
    assert "--apply" in _complete(ip, "%%coiled_ingress --a")


# --------------------------------------------------------------------------------------------------
# Pieces


def test_substitute():
    from coiled_jupyter.magics import substitute

    ns = {"a": "10.1.0.0/16", "n": 5, "flag": False, "rules": [{"ports": [1], "cidr": "x"}]}
    assert substitute("${a} $a $$ ${n} ${flag}", ns, "x") == "10.1.0.0/16 10.1.0.0/16 $ 5 false"
    assert json.loads(shlex.split(substitute("${rules}", ns, "x"))[0]) == ns["rules"]
    assert substitute("no dollars", {}, "x") == "no dollars"
    with pytest.raises(UsageError, match="variables 'b' and 'c' in x are not defined"):
        substitute("${b} ${c}", ns, "x")
    with pytest.raises(UsageError, match="at line 2, column 3 of x does not start a variable"):
        substitute("ok\nab$ c", ns, "x")
    with pytest.raises(UsageError, match="at line 1, column 6 of x does not start a variable"):
        substitute("${b} $5", ns, "x")
    with pytest.raises(UsageError, match="at line 1, column 1 of x"):
        substitute("$", ns, "x")
