"""Rendering of every result object: text/plain, text/html and the rules JSON mimetype.

The results come from the real core against the sandbox; escaping is checked on result objects built
directly, since AWS (and our validator) refuse '<' in descriptions and cluster names.
"""

from __future__ import annotations

import json
import re
from html import escape
from html.parser import HTMLParser
from pathlib import Path

import dask.config
import pytest

from coiled_jupyter import session
from coiled_jupyter.provision import reconcile
from coiled_jupyter.provision.results import SCHEMA_VERSION, RuleTable
from coiled_jupyter.provision.target import Target, target
from coiled_jupyter.rules import Rule
from coiled_jupyter.settings import effective_settings

MIME = "application/vnd.coiled-jupyter.rules+json"
VPN = {"ports": [8786, 8787], "cidr": "10.1.0.0/16", "description": "VPN & office"}
PEERED = {"ports": [8786], "cidr": "10.2.0.0/16", "description": "peered VPC"}
KINDS = [
    "rules",
    "plan",
    "apply",
    "destroy",
    "settings",
    "scheduler",
    "plan-new",
    "destroy-none",
    "save",
]


def settings_for(ingress):
    return effective_settings({"ingress": ingress}, account=lambda: None)


@pytest.fixture(scope="module")
def results(sandbox_server, _independent_clients, launch, add_by_hand):
    """One of every result object, from the core against the sandbox (made once: they are values)."""
    import types

    from coiled_jupyter.provision import sandbox

    sandbox.reset()
    cloud = types.SimpleNamespace(**_independent_clients)
    wanted = settings_for([VPN, PEERED])
    out = {"plan-new": reconcile.plan(target("shown"), wanted)}
    out["apply"] = reconcile.apply(target("shown"), wanted)
    gid = out["apply"].table.group_id
    add_by_hand(cloud.ec2, gid, 22, "0.0.0.0/0", "console")
    out["plan"] = reconcile.plan(target("shown"), wanted)
    out["rules"] = reconcile.describe(target("shown"), wanted)
    launch(gid, "shown-scheduler")
    out["scheduler"] = reconcile.scheduler_address(target("shown"), wanted)
    with dask.config.set({"coiled.client_public_ip": "203.0.113.7"}):
        out["settings"] = session.show(
            "shown", backend_options={"ingress": [VPN, PEERED]}, reach=True
        )
    session.set_settings([VPN, PEERED])
    out["save"] = session.save("user")
    session.reset()
    Path(out["save"].location).unlink()  # the config folder is shared by the whole test session
    out["destroy-none"] = session.destroy("never-made")
    cloud.ec2.terminate_instances(InstanceIds=[out["scheduler"].instance_id])
    out["destroy"] = session.destroy("shown")
    return out


class _Cells(HTMLParser):
    """The rows of the first table in a piece of HTML, as lists of cell texts."""

    def __init__(self):
        super().__init__()
        self.rows: list[list[str]] = []
        self._cell: list[str] | None = None
        self.tables = 0

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables += 1
        elif tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append("".join(self._cell))
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def html_rows(html: str) -> list[list[str]]:
    parser = _Cells()
    parser.feed(html)
    assert parser.tables <= 1
    return parser.rows


def text_rows(text: str) -> list[list[str]]:
    """The table of the text form, split by the column widths its dashes line gives."""
    lines = text.splitlines()
    dashes = [i for i, line in enumerate(lines) if re.fullmatch(r"-+( +-+)*", line)]
    if not dashes:
        return []
    index = dashes[0]
    spans = [m.span() for m in re.finditer(r"-+", lines[index])]
    rows = []
    for line in [lines[index - 1], *lines[index + 1 :]]:
        if line.startswith(("note:", "warning:", "layer ", "can this notebook")):
            break
        cells = []
        for n, (start, _end) in enumerate(spans):
            stop = spans[n + 1][0] if n + 1 < len(spans) else len(line)
            cells.append(line[start:stop].strip())
        rows.append(cells)
    return rows


# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_every_result_has_three_forms_that_agree(results, kind):
    result = results[kind]
    bundle = result._repr_mimebundle_()
    assert set(bundle) == {"text/plain", "text/html", MIME}
    data = bundle[MIME]
    assert json.loads(json.dumps(data)) == data
    assert data["version"] == SCHEMA_VERSION
    assert repr(result) == bundle["text/plain"]

    text, html = bundle["text/plain"], bundle["text/html"]
    header = text.splitlines()[0]
    t = result.target if hasattr(result, "target") else result.plan.target
    for words in (f"cluster '{t.cluster}'", "backend sandbox", f"region {t.region}", "account "):
        assert words in header, (words, header)
        assert words.replace("'", "&#x27;") in html, words
    if kind not in ("plan-new", "destroy-none", "settings", "save"):
        account = results["apply"].table.account_id
        assert account and f"account {account}" in header and data["account_id"] == account

    assert text_rows(text) == html_rows(html)
    assert len(data["rows"]) == max(0, len(html_rows(html)) - 1)
    for line in text.splitlines()[1:]:
        if line.startswith(("note:", "warning:", "layer ")):
            assert escape(line) in html, line


def test_the_tables_show_the_rules_and_where_they_came_from(results):
    text = results["rules"]._repr_mimebundle_()["text/plain"]
    rows = text_rows(text)
    assert rows[0] == ["Protocol", "Port", "Source", "Description", "Origin"]
    assert ["tcp", "22", "0.0.0.0/0", "console", "added by hand"] in rows
    assert [
        "tcp",
        "8786-8787",
        "10.1.0.0/16",
        "VPN & office",
        "cluster options (backend_options)",
    ] in rows
    gid = results["rules"].group_id
    assert [
        "all",
        "all",
        gid,
        "cluster-internal traffic (this group)",
        "this group (cluster-internal)",
    ] in rows
    assert "whole internet" in text

    plan = results["plan"]._repr_mimebundle_()
    rows = text_rows(plan["text/plain"])
    assert rows[0] == ["Action", "Protocol", "Port", "Source", "Description", "Origin"]
    assert ["remove", "tcp", "22", "0.0.0.0/0", "console", "added by hand"] in rows
    assert "added by hand" in plan["text/plain"] and "owned by coiled_jupyter" in plan["text/plain"]
    assert 'class="cj-remove"' in plan["text/html"]
    assert plan[MIME]["summary"] == "add 0, remove 1, keep 3"

    new = results["plan-new"]._repr_mimebundle_()
    assert new[MIME]["summary"].startswith("create group")
    assert "account unknown" in new["text/plain"]


def test_apply_destroy_and_scheduler_summaries(results):
    assert results["apply"]._repr_mimebundle_()[MIME]["summary"] == (
        "applied: create group, add 2, remove 0, keep 0"
    )
    destroyed = results["destroy"]._repr_mimebundle_()
    assert destroyed[MIME]["summary"] == f"deleted group {results['destroy'].group_id}"
    assert destroyed[MIME]["deleted"] is True
    assert "no group to delete" in results["destroy-none"]._repr_mimebundle_()["text/plain"]
    scheduler = results["scheduler"]._repr_mimebundle_()
    assert results["scheduler"].address in scheduler["text/plain"]
    assert scheduler[MIME]["address"] == results["scheduler"].address
    assert "public IP" in scheduler["text/plain"]


def test_the_settings_view_shows_origins_layers_and_reachability(results):
    bundle = results["settings"]._repr_mimebundle_()
    text, data = bundle["text/plain"], bundle[MIME]
    assert "rules from: cluster options (backend_options)" in text
    assert "use_scheduler_public_ip: true" in text and "built-in default" in text
    assert data["reachability"]["public_address"] == "203.0.113.7"
    assert data["reachability"]["scheduler"]["verdict"] == "no"
    assert "can this notebook reach the scheduler (port 8786)? no" in text
    assert any("203.0.113.7" in w for w in data["warnings"])
    assert [layer["layer"] for layer in data["layers"]] == [
        "built-in default",
        "account default",
        "dask config",
        "notebook session",
        "cluster options",
    ]
    assert text_rows(text)[1:] == [
        ["tcp", "8786", "10.1.0.0/16", "VPN & office"],
        ["tcp", "8786", "10.2.0.0/16", "peered VPC"],
        ["tcp", "8787", "10.1.0.0/16", "VPN & office"],
    ]


# --------------------------------------------------------------------------------------------------
# HTML safety and style


HOSTILE = "<script>alert(1)</script> & \"quoted\" 'single'"


def _hostile_table() -> RuleTable:
    target = Target(
        "sandbox", "us-east-1", "<img src=x onerror=alert(2)>", "vpc-<b>", "http://127.0.0.1:1/<i>"
    )
    rules = (
        Rule("tcp", 8786, 8786, "10.1.0.0/16", HOSTILE),
        Rule("tcp", 22, 22, "0.0.0.0/0", "<b>bold</b>"),
    )
    return RuleTable(
        target,
        "<account>",
        "sg-<x>",
        "<name>",
        "vpc-<c>",
        rules,
        ("<origin>", "not declared"),
        ("prefix list <pl>",),
        ("<warning>",),
    )


def test_everything_from_outside_is_escaped_in_html():
    html = _hostile_table()._repr_mimebundle_()["text/html"]
    body = html.split("</style>", 1)[1]
    assert "<script" not in body and "<img" not in body and "<b>" not in body
    assert "<i>" not in body and "<account>" not in body and "<x>" not in body
    assert "<origin>" not in body and "<pl>" not in body and "<warning>" not in body
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; &quot;quoted&quot;" in body
    assert "&lt;img src=x onerror=alert(2)&gt;" in body
    # text keeps the characters as they are, and shows the same rows
    bundle = _hostile_table()._repr_mimebundle_()
    assert HOSTILE in bundle["text/plain"]
    assert text_rows(bundle["text/plain"]) == html_rows(bundle["text/html"])
    assert json.loads(json.dumps(bundle[MIME]))["rows"][0]["description"] == HOSTILE


_COLOUR_NAMES = r"\b(red|green|blue|black|white|gray|grey|orange|yellow|purple|pink|brown)\b"


@pytest.mark.parametrize("kind", KINDS)
def test_colours_come_only_from_jupyterlab_variables(results, kind):
    html = results[kind]._repr_mimebundle_()["text/html"]
    assert "style=" not in html  # no inline styles
    style = re.search(r"<style>(.*?)</style>", html, re.S).group(1)
    # the stylesheet is well formed: nothing but "selector { declarations }" blocks
    blocks = re.findall(r"([^{}]+)\{([^{}]*)\}", style)
    assert re.sub(r"[^{}]+\{[^{}]*\}", "", style).strip() == ""
    for selector, declarations in blocks:
        assert selector.strip().startswith(".cj-result"), selector
        for declaration in filter(None, (d.strip() for d in declarations.split(";"))):
            prop, _, value = declaration.partition(":")
            if "color" in prop or "background" in prop or prop.strip() == "border-bottom":
                assert "var(--jp-" in value, declaration
    # no colour literal outside a var(--jp-..., fallback)
    outside = re.sub(r"var\(--jp-[a-z0-9-]+\s*,\s*[^()]*\)", "", html)
    assert not re.search(r"#[0-9a-fA-F]{3,8}\b|rgba?\(|hsla?\(", outside), outside
    assert not re.search(_COLOUR_NAMES, style)


def test_html_reads_well_unstyled(results):
    html = results["rules"]._repr_mimebundle_()["text/html"]
    assert "<table>" in html and "<thead>" in html and '<th scope="col">' in html
    assert "<strong>Firewall rules</strong>" in html
