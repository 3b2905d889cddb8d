"""The kinds of cluster and their ports (issue 18): the port model, the kind as a setting with an
origin, verdicts on the real ports, the lockout sentence, and the port matrix.

The conftest pins the tests written before issue 18 to the ``dask`` kind; here each test says the
kind it judges, or drops the pin to see the built-in default.
"""

from __future__ import annotations

import dask.config
import pytest
from test_coiled_client import PAGE_CALL

from coiled_jupyter import ports, session
from coiled_jupyter.display import text
from coiled_jupyter.reach import check, lockout
from coiled_jupyter.rules import IngressError, parse_ingress

# The seeds' example (and that of Coiled's earlier page), and that of Coiled's current page.
SEEDS = [{"ports": [8786, 8787], "cidr": "10.1.0.0/16"}]
NEWER_PAGE = [{"ports": [22, 443], "cidr": "10.1.0.0/16"}]


@pytest.fixture
def kind(monkeypatch):
    """Set ``coiled-jupyter.cluster-kind`` (None: drop it, so the built-in default decides)."""

    def set_kind(value):
        monkeypatch.delenv("DASK_COILED_JUPYTER__CLUSTER_KIND", raising=False)
        monkeypatch.setitem(dask.config.config["coiled-jupyter"], "cluster-kind", value)

    return set_kind


@pytest.fixture
def coiled_config(monkeypatch):
    """Set Coiled's own keys in this kernel's Dask config, as a person's coiled.yaml would."""

    def set_keys(**keys):
        coiled = dask.config.config.setdefault("coiled", {})
        for key, value in keys.items():
            monkeypatch.setitem(coiled, key, value)

    return set_keys


# --------------------------------------------------------------------------------------------------
# The model


def test_a_coiled_user_gets_the_coiled_kind_by_default(kind):
    kind(None)
    model = ports.model()
    assert (model.kind, model.kind_origin) == ("coiled", "built-in default")
    assert (model.scheduler, model.dashboard, model.dashboard_https) == (443, 443, True)
    assert model.summary == (
        "kind coiled (built-in default): scheduler 443 (TLS), dashboard 443 (HTTPS)"
    )


def test_coiled_ports_follow_coiled_keys_in_dask_config(kind, coiled_config):
    kind("coiled")
    coiled_config(scheduler_port=8786, use_dashboard_https=False)
    model = ports.model()
    assert (model.scheduler, model.scheduler_origin) == (8786, "dask config")
    assert (model.dashboard, model.dashboard_https) == (8787, False)
    assert model.ports_text == "scheduler 8786 (TLS), dashboard 8787 (HTTP)"


def test_the_dask_kind_listens_on_8786_and_8787(kind, coiled_config):
    kind("dask")
    coiled_config(scheduler_port=443)  # a Coiled key says nothing about a plain Dask cluster
    model = ports.model()
    assert (model.kind, model.scheduler, model.dashboard) == ("dask", 8786, 8787)
    assert model.kind_origin == "dask config"


def test_a_bad_kind_or_port_in_config_is_one_sentence(kind, coiled_config):
    kind("daks")
    with pytest.raises(IngressError, match="did you mean 'dask'"):
        ports.model()
    kind("coiled")
    coiled_config(scheduler_port="https")
    with pytest.raises(IngressError, match="coiled.scheduler_port in Dask's config is 'https'"):
        ports.model()


def test_the_model_matches_the_installed_coiled_client():
    import inspect
    import re
    from pathlib import Path

    import coiled
    from coiled.utils import cluster_firewall

    assert coiled.__version__.startswith(ports.COILED_VERSION.rsplit(".", 1)[0])
    parameters = inspect.signature(cluster_firewall).parameters
    assert parameters["scheduler"].default == ports.COILED_SCHEDULER
    # coiled.spark needs pyspark to import; its port is read from its source.
    spark = (Path(coiled.__file__).parent / "spark.py").read_text()
    assert re.search(r"^SPARK_CONNECT_PORT = (\d+)\b", spark, re.M).group(1) == str(ports.SPARK)
    assert cluster_firewall("10.0.0.0/8", https=False)["ingress"][0]["ports"] == [
        ports.COILED_SCHEDULER,
        ports.COILED_HTTP_DASHBOARD,
    ]
    assert cluster_firewall("10.0.0.0/8", ssh=True, jupyter=True)["ingress"][0]["ports"] == [
        443,
        ports.SSH,
        ports.JUPYTER,
        443,
    ]


# --------------------------------------------------------------------------------------------------
# The kind as a setting with an origin, and every view saying what it assumed


def test_set_kind_is_a_session_setting_with_an_origin(kind):
    kind(None)
    view = session.set_kind("dask")
    assert view.to_payload()["ports"]["kind"] == "dask"
    assert view.to_payload()["ports"]["kind_origin"] == "notebook session (this kernel)"
    assert "ports assumed: kind dask (notebook session (this kernel)): scheduler 8786" in text(
        view.to_payload()
    )
    view = session.reset()
    assert view.to_payload()["ports"]["kind"] == "coiled"


def test_a_bad_kind_changes_nothing(kind):
    kind(None)
    session.set_kind("dask")
    with pytest.raises(IngressError, match="did you mean 'coiled'"):
        session.set_kind("coiledd")
    assert ports.model().kind == "dask"


def test_the_built_in_default_opens_the_kinds_own_ports(kind):
    kind(None)
    view = session.show()
    assert [(r.ports, r.source) for r in view.settings.rules] == [("443", "0.0.0.0/0")]
    assert not view.reachability.connect_warnings


def test_plan_apply_and_describe_say_which_kind_they_assumed(sandbox, kind):
    kind(None)
    session.set_settings(NEWER_PAGE)
    for result in (session.plan(), session.apply(), session.describe()):
        payload = result.to_payload()
        assert payload["ports"]["summary"].endswith("scheduler 443 (TLS), dashboard 443 (HTTPS)")
        assert "ports assumed: kind coiled" in text(payload)


# --------------------------------------------------------------------------------------------------
# Verdicts on the real ports, and no lockout


def test_verdicts_use_the_port_the_scheduler_listens_on(kind, coiled_config):
    coiled_config(client_public_ip="203.0.113.7")
    rules = parse_ingress([{"ports": [8786, 8787], "cidr": "me"}])
    kind("coiled")
    judged = check(rules, True, local=[])
    assert (judged.scheduler.port, judged.scheduler.verdict) == (443, "no")
    kind("dask")
    judged = check(rules, True, local=[])
    assert (judged.scheduler.port, judged.scheduler.verdict) == (8786, "yes")


SEEDS_LOCKOUT = (
    "this Coiled cluster listens on 443 (scheduler and HTTPS dashboard); these rules open "
    "8786-8787 only, so no client will connect: add 443, or set scheduler_port: 8786."
)


def test_the_seeds_example_on_a_coiled_cluster_says_no_client_will_connect(kind):
    kind(None)
    view = session.set_settings(SEEDS)
    assert view.reachability.connect_warnings[0] == SEEDS_LOCKOUT
    assert SEEDS_LOCKOUT in text(view.to_payload())
    # The fixes, each a line that works when pasted.
    assert view.reachability.commands[:2] == (
        ("%coiled_ingress add 443 10.1.0.0/16", "open 443 to 10.1.0.0/16"),
        (
            "%coiled_ingress set allow_ingress_from=10.1.0.0/16 scheduler_port=8786",
            "or have the scheduler listen on 8786 (Coiled's keywords)",
        ),
    )


def test_plan_and_apply_say_it_first_and_still_apply_as_written(sandbox, kind):
    kind(None)
    session.set_settings(SEEDS)
    plan = session.plan()
    assert plan.warnings[0] == SEEDS_LOCKOUT
    applied = session.apply()
    assert applied.plan.warnings[0] == SEEDS_LOCKOUT
    assert [(r.ports, r.source) for r in applied.table.rules if r.protocol == "tcp"] == [
        ("8786-8787", "10.1.0.0/16")
    ]
    assert SEEDS_LOCKOUT in session.describe().warnings


def test_no_lockout_sentence_when_the_scheduler_port_is_open(kind, coiled_config):
    kind("coiled")
    model = ports.model()
    assert lockout(parse_ingress(NEWER_PAGE), model) is None
    assert lockout(parse_ingress(SEEDS), ports.model(kind="dask")) is None
    coiled_config(scheduler_port=8786)
    assert lockout(parse_ingress(SEEDS), ports.model()) is None


def test_no_rules_at_all_say_so(kind):
    kind("dask")
    sentence = lockout([], ports.model())
    assert sentence == (
        "this Dask cluster listens on 8786 (scheduler) and 8787 (dashboard); these rules open no "
        "port, so no client will connect: add 8786."
    )


def test_a_dask_kind_with_coiled_rules_points_at_the_kind(kind):
    kind("dask")
    sentence = lockout(parse_ingress(NEWER_PAGE), ports.model())
    assert sentence.endswith("add 8786, or, if it is a Coiled cluster, say so.")


def test_not_this_notebook_is_said_in_the_plan(sandbox, kind, coiled_config):
    kind(None)
    coiled_config(client_public_ip="203.0.113.7")
    session.set_settings([{"ports": [443], "cidr": "198.51.100.0/24"}])
    warning = session.plan().warnings[0]
    assert warning.startswith(
        "this notebook's public address 203.0.113.7 is not admitted on port 443"
    )


# --------------------------------------------------------------------------------------------------
# The port matrix for IT


def test_port_matrix_lists_each_port_its_use_and_what_admits_it(kind):
    kind(None)
    session.set_settings(
        [{"ports": [443], "cidr": "10.1.0.0/16"}, {"ports": [22], "cidr": "10.2.0.0/16"}]
    )
    payload = session.port_matrix().to_payload()
    rows = {row["ports"]: row for row in payload["rows"]}
    assert list(rows) == ["443", "22", "15003", "8888", "all"]
    assert rows["443"]["use"] == "client to scheduler (TLS) and the HTTPS dashboard"
    assert (rows["443"]["needed"], rows["443"]["admitted"], rows["443"]["from"]) == (
        "yes",
        "yes",
        "10.1.0.0/16",
    )
    assert (rows["22"]["admitted"], rows["22"]["from"]) == ("yes", "10.2.0.0/16")
    assert rows["15003"]["admitted"] == "no"
    rendered = text(payload)
    assert rendered.startswith("Ports: cluster 'notebook'")
    assert "ports assumed: kind coiled (built-in default)" in rendered


def test_port_matrix_of_a_dask_cluster(kind):
    kind("dask")
    session.set_settings(SEEDS)
    rows = session.port_matrix().to_payload()["rows"]
    assert [(r["ports"], r["admitted"]) for r in rows] == [
        ("8786", "yes"),
        ("8787", "yes"),
        ("all", "yes"),
    ]


# --------------------------------------------------------------------------------------------------
# What Coiled's client does with the dashboard link on the private IP


def test_private_ip_with_https_dashboard_keeps_the_public_link(kind):
    kind(None)
    view = session.set_scheduler_ip("private")
    assert any("still links the HTTPS dashboard (port 443)" in n for n in view.notes)


def test_private_ip_without_https_dashboard_links_the_private_address(kind, coiled_config):
    kind(None)
    coiled_config(use_dashboard_https=False)
    view = session.set_scheduler_ip("private")
    assert any(
        "also sets use_dashboard_public_ip: false, so the dashboard link is the scheduler's "
        "private address (http, port 8787)" in n
        for n in view.notes
    )
    assert not [n for n in session.set_scheduler_ip("public").notes if "dashboard link" in n]


def test_coiled_client_sets_the_private_dashboard_as_we_say():
    """coiled/v2/core.py, as installed: the lines the note above describes."""
    import inspect

    import coiled.v2.core

    source = inspect.getsource(coiled.v2.core)
    assert (
        "if use_scheduler_public_ip is False:\n"
        '            if "use_dashboard_public_ip" not in backend_options and not use_dashboard_https:\n'
        '                backend_options["use_dashboard_public_ip"] = False'
    ) in source


# --------------------------------------------------------------------------------------------------
# --kind on the magics, the panel's control


def test_kind_on_the_magics_is_kept_and_a_refused_command_changes_nothing(ip, kind):
    from IPython.core.error import UsageError

    kind(None)
    view = ip.run_line_magic("coiled_ingress", "--kind dask")
    assert view.to_payload()["ports"]["kind"] == "dask"
    ip.run_line_magic("coiled_ingress", "add 8786 10.1.0.0/16")
    assert ports.model().kind == "dask"
    with pytest.raises(UsageError, match="did you mean 'coiled'"):
        ip.run_line_magic("coiled_ingress", "--kind coield")
    with pytest.raises(UsageError, match="host bits"):
        ip.run_line_magic("coiled_ingress", "add 443 10.1.0.2/16 --kind coiled")
    assert ports.model().kind == "dask"
    matrix = ip.run_line_magic("coiled_ingress", "ports --kind coiled")
    assert matrix.to_payload()["kind"] == "ports"
    assert ports.model().kind == "coiled"


def test_kind_completes(ip):
    from IPython.core.completer import provisionalcompleter

    def complete(text):
        with provisionalcompleter():
            return [c.text for c in ip.Completer.completions(text, len(text))]

    assert set(complete("%coiled_ingress --kind ")) >= {"coiled", "dask"}
    assert complete("%coiled_ingress add --kind d") == ["dask"]
    assert "--kind" in complete("%coiled_ingress add --k")


def test_the_panel_has_a_kind_control_and_warns_before_apply(sandbox, dask_config, kind):
    import html

    from coiled_jupyter.widgets import KIND, FirewallPanel

    kind(None)
    session.set_settings(SEEDS)
    panel = FirewallPanel(background=False)
    try:
        assert panel.kind.description == KIND and panel.kind.value == "coiled"
        assert "ports assumed: kind coiled" in html.unescape(panel.header.value)
        assert "no client will connect: add 443" in html.unescape(panel.reachability.value)
        panel.kind.value = "dask"
        assert ports.model().kind == "dask"
        assert "no client will connect" not in html.unescape(panel.reachability.value)
        assert "ports assumed: kind dask" in html.unescape(panel.header.value)
    finally:
        panel.close()


# --------------------------------------------------------------------------------------------------
# Coiled's current page, verbatim, through every front end (issue 18 item 4)

# Coiled's "Configuring firewalls" page as it reads now: its account-level call (test_coiled_client's
# PAGE_CALL) with the ports of its current example.
NEWER_PAGE_CALL = PAGE_CALL.replace('"ports": [8786, 8787]', '"ports": [22, 443]')
NEWER_PAGE_RULES = {("tcp", "22", "10.1.0.0/16"), ("tcp", "443", "10.1.0.0/16")}


def _shown(view) -> set:
    return {(r.protocol, r.ports, r.source) for r in view.settings.rules}


def test_newer_page_through_set_backend_options(cloud, dask_config, kind):
    import coiled_jupyter

    kind(None)
    body = NEWER_PAGE_CALL.removeprefix("import coiled\n")
    with pytest.warns(UserWarning, match="not used: the sandbox takes no AWS keys"):
        exec(compile(body, "<coiled's page>", "exec"), {"coiled": coiled_jupyter})
    with dask.config.set({"coiled.workspace": "my-team-account-name"}):
        plan = session.plan("page")
        assert {(r.protocol, r.ports, r.source) for r in plan.add} == NEWER_PAGE_RULES
        assert not [w for w in plan.warnings if "no client will connect" in w]
        applied = session.apply("page")
    assert {(r.protocol, r.ports, r.source) for r in applied.table.rules} >= NEWER_PAGE_RULES


def test_newer_page_through_the_magics(ip, kind):
    kind(None)
    view = ip.run_cell_magic("coiled_ingress", "", "- ports: [22, 443]\n  cidr: 10.1.0.0/16\n")
    assert _shown(view) == NEWER_PAGE_RULES
    assert view.reachability.scheduler.port == 443
    assert not [w for w in view.reachability.connect_warnings if "no client" in w]
    view = ip.run_line_magic("coiled_ingress", 'set [{"ports": [22, 443], "cidr": "10.1.0.0/16"}]')
    assert _shown(view) == NEWER_PAGE_RULES


def test_newer_page_through_the_panel(sandbox, dask_config, kind):
    from coiled_jupyter.widgets import FirewallPanel

    kind(None)
    panel = FirewallPanel(background=False)
    try:
        for row in list(panel.rows):
            panel.remove_row(row)
        panel.add_row(NEWER_PAGE[0])
        assert _shown(session.show()) == NEWER_PAGE_RULES
        panel.apply()
        assert "no client will connect" not in str(shown_payload(panel))
    finally:
        panel.close()


def shown_payload(panel) -> dict:
    from coiled_jupyter.display import MIMETYPE

    [output] = panel.output.outputs
    return output["data"][MIMETYPE]


def test_both_kinds_take_both_pages_examples_as_written(ip, kind):
    """The seeds' example applies on a Coiled cluster too (with the lockout sentence); the newer
    page's on a Dask cluster (with its own)."""
    kind("dask")
    view = session.set_settings(NEWER_PAGE)
    assert _shown(view) == NEWER_PAGE_RULES
    assert (
        "add 8786, or, if it is a Coiled cluster, say so." in view.reachability.connect_warnings[0]
    )
    assert ("%coiled_ingress --kind coiled", "or say it is a Coiled cluster") in (
        view.reachability.commands
    )
    kind("coiled")
    view = session.set_settings(SEEDS)
    assert {r.ports for r in view.settings.rules} == {"8786", "8787"}
    assert view.reachability.connect_warnings[0] == SEEDS_LOCKOUT


def test_the_lockout_fix_never_opens_the_scheduler_to_the_internet(kind):
    kind("coiled")
    judged = check(parse_ingress([{"ports": [8786], "cidr": "everyone"}]), True, local=[])
    assert judged.connect_warnings[0].startswith("this Coiled cluster listens on 443")
    assert judged.commands[0] == ("%coiled_ingress add 443 me", "open 443 to me")
