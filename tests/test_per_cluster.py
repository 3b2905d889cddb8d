"""Session settings are per cluster: what is set for one cluster never reaches another's plan.

Each front end is driven as a person drives it (the session functions, the magics in a real IPython
shell, the panel through its controls); the plans are made against the sandbox and read as payloads.
The REST API's twin of these tests is in tests/server/test_handlers.py.
"""

from __future__ import annotations

import dask.config
import pytest

from coiled_jupyter import session
from coiled_jupyter.errors import StaleEdit
from coiled_jupyter.settings import PUBLIC_IP_KEY, SESSION, Layer
from coiled_jupyter.widgets import FirewallPanel

PROD = [{"ports": [8786], "cidr": "10.1.0.0/16", "description": "prod VPN"}]


def planned_sources(plan) -> set[str]:
    return {row["source"] for row in plan.to_payload()["rows"] if row["action"] == "add"}


def test_settings_set_for_one_cluster_never_reach_another_plan(dask_config, sandbox):
    session.set_settings(PROD, cluster="prod")
    session.set_scheduler_ip("private", cluster="prod")
    dev = session.plan("dev")
    assert "10.1.0.0/16" not in planned_sources(dev)
    assert dev.settings.ingress.layer is Layer.DEFAULT  # dev has no session settings
    assert dev.settings.use_scheduler_public_ip.value is True
    assert planned_sources(session.plan("prod")) == {"10.1.0.0/16"}
    # Nor the default cluster's (no --cluster), nor cluster_kwargs of another cluster.
    assert "10.1.0.0/16" not in planned_sources(session.plan())
    assert session.cluster_kwargs("dev")["backend_options"]["ingress"] == [
        {"ports": [8786, 8787], "cidr": "0.0.0.0/0"}
    ]
    prod = session.cluster_kwargs("prod")
    assert prod["backend_options"]["ingress"] == [{"ports": [8786], "cidr": "10.1.0.0/16"}]
    assert prod["use_scheduler_public_ip"] is False


def test_the_view_names_the_cluster_and_the_clusters_with_session_settings(dask_config):
    session.add(8786, "10.1.0.0/16", cluster="prod")
    session.add(8786, "10.2.0.0/16", cluster="stage")
    view = session.show("dev", reach=False)
    payload = view.to_payload()
    assert payload["cluster"] == "dev" and payload["session_clusters"] == ["prod", "stage"]
    assert "also for: prod, stage; none of them applies to this cluster" in repr(view)
    assert SESSION.values.keys() == {"prod", "stage"}
    session.reset("prod")
    assert session.show("dev", reach=False).to_payload()["session_clusters"] == ["stage"]


def test_remove_and_reset_touch_only_their_cluster(dask_config):
    session.set_settings(PROD, cluster="prod")
    session.set_settings(PROD, cluster="dev")
    session.remove(8786, "10.1.0.0/16", cluster="dev")
    assert SESSION.of("dev").ingress == ()
    assert [r.source for r in SESSION.of("prod").ingress] == ["10.1.0.0/16"]
    session.reset("dev")
    assert SESSION.of("dev").empty and not SESSION.of("prod").empty


def test_the_toggle_mirrored_in_dask_config_is_the_default_cluster_only(dask_config):
    assert dask.config.get(PUBLIC_IP_KEY, None) is None
    session.set_scheduler_ip("private", cluster="dev")
    assert dask.config.get(PUBLIC_IP_KEY, None) is None  # another cluster's toggle stays out
    view = session.show("dev", reach=False)
    [toggle, rules] = view.to_payload()["client_notes"]
    assert "the default cluster 'notebook''s toggle only" in toggle
    assert "coiled.Cluster(**coiled_jupyter.cluster_kwargs('dev'))" in toggle
    assert "cluster_kwargs('dev')" in rules
    session.set_scheduler_ip("private")  # the default cluster
    assert dask.config.get(PUBLIC_IP_KEY) is False
    session.reset("dev")
    assert dask.config.get(PUBLIC_IP_KEY) is False  # still the default cluster's
    session.reset()
    assert dask.config.get(PUBLIC_IP_KEY, None) is None


def test_an_edit_made_from_an_older_session_is_refused(dask_config):
    view = session.set_settings(PROD, cluster="prod")
    made_from = view.session_version
    session.remove(8786, "10.1.0.0/16", cluster="prod")  # the next cell's magic
    before = SESSION.values
    with pytest.raises(StaleEdit, match="changed .* after this edit was made"):
        session.set_settings(
            [{"ports": [8786], "cidr": "0.0.0.0/0"}], cluster="prod", based_on=made_from
        )
    assert SESSION.values == before
    # Another cluster's change does not make the edit stale.
    current = session.show("prod", reach=False).session_version
    session.add(22, "10.9.0.0/16", cluster="dev")
    session.set_settings(PROD, cluster="prod", based_on=current)
    assert [r.source for r in SESSION.of("prod").ingress] == ["10.1.0.0/16"]


def test_saving_another_cluster_session_says_it_applies_to_every_cluster(dask_config):
    session.set_settings(PROD, cluster="prod")
    saved = session.save(cluster="prod")
    assert any("read for every cluster" in note for note in saved.notes)


# --------------------------------------------------------------------------------------------------
# The magics


def test_magics_keep_settings_per_cluster(ip, dask_config, sandbox):
    ip.run_line_magic("coiled_ingress", "set [{ports: [9100], cidr: 10.20.0.0/16}] --cluster prod")
    plan = ip.run_line_magic("coiled_ingress", "plan --cluster dev")
    assert "10.20.0.0/16" not in planned_sources(plan)
    assert "10.20.0.0/16" not in planned_sources(ip.run_line_magic("coiled_ingress", "plan"))
    # Without --cluster the magics use the default cluster: CoiledMagics.cluster, else Dask's key.
    ip.run_line_magic("config", "CoiledMagics.cluster = 'prod'")
    assert planned_sources(ip.run_line_magic("coiled_ingress", "plan")) == {"10.20.0.0/16"}
    ip.run_line_magic("config", "CoiledMagics.cluster = ''")
    with dask.config.set({"coiled-jupyter.cluster": "prod"}):
        view = ip.run_line_magic("coiled_ingress", "")
        assert view.settings.ingress.layer is Layer.SESSION
    view = ip.run_line_magic("coiled_ingress", "")
    assert view.target.cluster == "notebook" and view.settings.ingress.layer is Layer.DEFAULT


def test_the_cell_magic_and_the_toggle_keep_to_their_cluster(ip, dask_config):
    ip.run_cell_magic(
        "coiled_ingress",
        "--cluster prod",
        "coiled:\n  backend-options:\n    ingress: [{ports: [8786], cidr: 10.1.0.0/16}]\n"
        "  use_scheduler_public_ip: false\n",
    )
    ip.run_line_magic("coiled_scheduler_ip", "private --cluster stage")
    dev = ip.run_line_magic("coiled_ingress", "--cluster dev")
    assert dev.settings.ingress.layer is Layer.DEFAULT
    assert dev.settings.use_scheduler_public_ip.value is True
    assert ip.run_line_magic("coiled_scheduler_ip", "--cluster stage").settings.rules == (
        dev.settings.rules
    )


def test_the_firewall_magic_opens_with_that_cluster_settings(ip, dask_config):
    ip.run_line_magic("coiled_ingress", "add 9100 10.20.0.0/16 --cluster panel1")
    panel = ip.run_line_magic("coiled_firewall", "--cluster panel1")
    other = ip.run_line_magic("coiled_firewall", "--cluster panel2")
    try:
        assert [r.source.value for r in panel.rows] == ["10.20.0.0/16"]
        assert [r.source.value for r in other.rows] == ["0.0.0.0/0"]
        assert "also set for: panel1" in other.header.value
    finally:
        panel.close()
        other.close()


# --------------------------------------------------------------------------------------------------
# The panel


def test_a_panel_edit_stays_with_its_cluster(dask_config, sandbox, ip):
    prod = FirewallPanel("prod", background=False)
    dev = FirewallPanel("dev", background=False)
    try:
        prod.rows[0].source.value = "10.1.0.0/16"
        assert [r.source.value for r in dev.rows] == ["0.0.0.0/0"]  # the dev panel did not follow
        assert "also set for: prod" in dev.header.value
        dev.plan()
        payload = dev.output.outputs[0]["data"]["application/vnd.coiled-jupyter.rules+json"]
        assert payload["kind"] == "plan"
        assert "10.1.0.0/16" not in {row["source"] for row in payload["rows"]}
        plan = ip.run_line_magic("coiled_ingress", "plan --cluster dev")
        assert "10.1.0.0/16" not in planned_sources(plan)
        assert planned_sources(ip.run_line_magic("coiled_ingress", "plan --cluster prod")) == {
            "10.1.0.0/16"
        }
    finally:
        prod.close()
        dev.close()


def test_a_panel_keeps_its_cluster_when_the_default_changes(dask_config):
    panel = FirewallPanel(background=False)
    try:
        with dask.config.set({"coiled-jupyter.cluster": "other"}):
            panel.rows[0].source.value = "10.1.0.0/16"
        assert [r.source for r in SESSION.of("notebook").ingress] == ["10.1.0.0/16"] * 2
        assert SESSION.of("other").empty
    finally:
        panel.close()


def test_the_magics_default_cluster_is_the_kernel_default(ip, dask_config):
    """%config CoiledMagics.cluster names the default cluster for the whole kernel: the panel and
    the toggle mirrored into Dask's config (which coiled.Cluster() reads) follow it."""
    ip.run_line_magic("config", "CoiledMagics.cluster = 'prod'")
    ip.run_line_magic("coiled_scheduler_ip", "private")
    assert SESSION.of("prod").use_scheduler_public_ip is False
    assert dask.config.get(PUBLIC_IP_KEY) is False
    panel = FirewallPanel(background=False)
    try:
        assert panel.cluster == "prod" and panel.scheduler_ip.value is False
    finally:
        panel.close()
    ip.run_line_magic("config", "CoiledMagics.cluster = 'dev'")
    assert dask.config.get(PUBLIC_IP_KEY, None) is None  # dev sets no toggle
    assert session.show(reach=False).target.cluster == "dev"
