"""Copy-as-cell: the settings payload's ``copy_as_cell``, run in a real IPython shell, sets exactly
the settings it was made from, applies nothing, and takes no notebook variable in."""

from __future__ import annotations

import pytest

from coiled_jupyter import session
from coiled_jupyter.settings import SESSION

# Descriptions the YAML reader would take for something else, or that the cell magic would read as
# a notebook variable, or that would end a flow list or a plain value.
AWKWARD = [
    "1e5",
    "true",
    "null",
    "0x10",
    "0022",
    "1:30",
    "NULL",
    "-5",
    ".inf",
    "cost ${x}",
    "cost $x and $$",
    "a, b",
    "[list]",
    "{x}",
    "a #b",
    "key: value",
    "(quoted)",
    "@home",
    "!bang",
    "*star",
    "&amp",
    "office VPN",
]


def run_cell(ip, text: str):
    first, body = text.split("\n", 1)
    assert first.startswith("%%coiled_ingress ")
    return ip.run_cell_magic("coiled_ingress", first.removeprefix("%%coiled_ingress "), body)


@pytest.mark.parametrize("description", AWKWARD)
def test_the_cell_sets_the_same_description_and_takes_no_variable(ip, dask_config, description):
    ip.user_ns["x"] = "a notebook variable"
    view = session.add("8786,8787", "10.1.0.0/16", description=description, cluster="cell")
    expected = SESSION.of("cell")
    text = view.to_payload()["copy_as_cell"]
    session.reset("cell")
    result = run_cell(ip, text)
    assert result.to_payload()["kind"] == "settings"
    assert SESSION.of("cell").ingress == expected.ingress
    assert {r.description for r in SESSION.of("cell").ingress} == {description}


def test_the_cell_names_the_cluster_keeps_the_toggle_and_never_applies(ip, dask_config, api_calls):
    session.add("8000-8100", "10.2.0.0/16", protocol="udp", cluster="cell-two")
    session.add("22", "2001:db8::/32", cluster="cell-two")
    view = session.set_scheduler_ip("private", cluster="cell-two")
    expected = SESSION.of("cell-two")
    text = view.to_payload()["copy_as_cell"]
    assert text.splitlines()[0] == "%%coiled_ingress --cluster cell-two"
    assert "--apply" not in text
    assert "use_scheduler_public_ip: false" in text
    session.reset("cell-two")
    result = run_cell(ip, text)
    assert result.to_payload()["cluster"] == "cell-two"
    assert SESSION.of("cell-two").ingress == expected.ingress
    assert SESSION.of("cell-two").use_scheduler_public_ip is False
    assert sum(api_calls.values()) == 0


def test_no_rules_is_an_empty_list_not_the_default(ip, dask_config):
    view = session.clear(cluster="empty")
    text = view.to_payload()["copy_as_cell"]
    assert "ingress: []" in text
    session.reset("empty")
    run_cell(ip, text)
    assert SESSION.of("empty").ingress == ()
