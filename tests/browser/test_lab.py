"""The extension in a real JupyterLab, driven by chromium: the sidebar, the MIME renderer, and data from
the cloud shown as text. Each test ends with no JavaScript error and no dialog (see ``lab_page``)."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from coiled_jupyter.rehearsal import namespaces

SIDEBAR_TAB = 'li.lm-TabBar-tab[data-id="coiled-jupyter-firewall"]'
SIDEBAR = "#coiled-jupyter-firewall"
# Fits AWS's character set for descriptions (a-zA-Z0-9. _-:/()#,@[]+=&;{}!$*): markup once decoded.
HOSTILE_DESCRIPTION = "&lt;img src=x onerror=alert(1)&gt; ${alert(2)} javascript:alert(3)"


def open_sidebar(lab_page, cluster: str):
    page = lab_page.page
    sidebar = page.locator(SIDEBAR)
    if not sidebar.is_visible():
        page.click(SIDEBAR_TAB)
    sidebar.wait_for(state="visible")
    sidebar.get_by_label("Reset session edits").click()
    field = sidebar.get_by_label("Cluster name")
    field.fill(cluster)
    field.press("Enter")
    expect(sidebar.locator(".cj-header").first).to_contain_text(f"cluster {cluster}")
    # The refresh ends with the cloud's table of this cluster.
    sidebar.get_by_label("Rules in the cloud").locator(f'[data-cluster="{cluster}"]').wait_for()
    return sidebar


def add_rule(sidebar, ports: str, source: str, description: str = ""):
    sidebar.get_by_label("New rule ports").fill(ports)
    sidebar.get_by_label("New rule source").fill(source)
    sidebar.get_by_label("New rule description").fill(description)
    sidebar.get_by_label("Add rule").click()


def group_rules(cloud, cluster: str) -> list[tuple[int, str]]:
    groups = cloud.ec2.describe_security_groups(
        Filters=[{"Name": "tag:coiled-jupyter:cluster", "Values": [cluster]}]
    )["SecurityGroups"]
    return sorted(
        (p.get("FromPort"), r["CidrIp"])
        for g in groups
        for p in g["IpPermissions"]
        for r in p.get("IpRanges", [])
    )


def test_sidebar_refuses_host_bits_then_applies_the_fixed_rule(lab_page, cloud):
    sidebar = open_sidebar(lab_page, "lab-sidebar")
    header = sidebar.locator(".cj-header").first
    assert "sandbox: not AWS" in header.inner_text()
    assert "lab-sidebar" in header.inner_text()

    # The sentence comes as the person types, before Add, and Add waits until the rule is fine.
    sidebar.get_by_label("New rule ports").fill("8786")
    sidebar.get_by_label("New rule source").fill("10.1.0.2/16")
    sidebar.get_by_label("New rule description").fill("office VPN")
    error = sidebar.get_by_label("New rule error")
    expect(error).to_contain_text("host bits")
    assert "10.1.0.0/16" in error.inner_text()
    expect(sidebar.get_by_label("Add rule")).to_be_disabled()
    assert sidebar.locator(".cj-rules tr[data-rule]", has_text="10.1.0").count() == 0

    sidebar.get_by_label("New rule source").fill("10.1.0.0/16")
    expect(error).to_be_empty()
    expect(sidebar.get_by_label("Add rule")).to_be_enabled()
    sidebar.get_by_label("Add rule").click()
    row = sidebar.locator('.cj-rules tr[data-rule="tcp 8786 from 10.1.0.0/16"]')
    row.wait_for()
    expect(error).to_be_empty()
    assert "office VPN" in row.inner_text()
    expect(sidebar.locator(".cj-line", has_text="Rules from:")).to_contain_text("session")

    sidebar.get_by_label("Apply", exact=True).click()
    cloud_row = sidebar.get_by_label("Rules in the cloud").locator("tr", has_text="10.1.0.0/16")
    cloud_row.wait_for()
    assert "office VPN" in cloud_row.inner_text()
    assert group_rules(cloud, "lab-sidebar") == [(8786, "10.1.0.0/16")]
    lab_page.screenshot("sidebar-light")
    lab_page.theme("JupyterLab Dark")
    lab_page.screenshot("sidebar-dark")
    lab_page.theme("JupyterLab Light")


def test_sidebar_shows_team_defaults_after_refresh_and_says_what_an_add_replaces(lab_page, cloud):
    """Team defaults written by another process: the settings alone (no cloud call) cannot know
    them; Refresh's describe reads them, and the sidebar then shows them, with its notes."""
    import json

    team = [{"ports": [8786, 8787], "cidr": "10.1.0.0/16", "description": "company VPN"}]
    cloud.ssm.put_parameter(
        Name="/coiled-jupyter/backend-options",
        Value=json.dumps({"ingress": team}),
        Type="String",
        Overwrite=True,
    )
    sidebar = open_sidebar(lab_page, "lab-team")
    origin = sidebar.locator(".cj-line", has_text="Rules from:")
    expect(origin).to_contain_text("account default (SSM /coiled-jupyter/backend-options)")
    expect(sidebar.locator(".cj-rules")).to_contain_text("company VPN")

    add_rule(sidebar, "9000", "10.9.0.0/16", "data team")
    notes = sidebar.get_by_label("Settings notes")
    expect(notes).to_contain_text("replace those of the account default")
    expect(notes).to_contain_text("tcp 8786-8787 from 10.1.0.0/16")
    lab_page.screenshot("sidebar-team-light")
    lab_page.theme("JupyterLab Dark")
    lab_page.screenshot("sidebar-team-dark")
    lab_page.theme("JupyterLab Light")


def test_sidebar_edits_a_row_in_place_with_the_sentence_next_to_it(lab_page, cloud):
    sidebar = open_sidebar(lab_page, "lab-edit")
    add_rule(sidebar, "8786", "10.2.0.0/16")
    label = "tcp 8786 from 10.2.0.0/16"
    sidebar.locator(f'tr[data-rule="{label}"]').wait_for()
    sidebar.get_by_label(f"Edit rule {label}").click()
    sidebar.get_by_label(f"Source of rule {label}").fill("10.2.0.9/16")
    sidebar.get_by_label(f"Save rule {label}").click()
    error = sidebar.get_by_label(f"Error for rule {label}")
    error.wait_for(state="visible")
    assert "host bits" in error.inner_text()
    sidebar.get_by_label(f"Source of rule {label}").fill("10.3.0.0/16")
    sidebar.get_by_label(f"Save rule {label}").click()
    sidebar.locator('tr[data-rule="tcp 8786 from 10.3.0.0/16"]').wait_for()
    assert sidebar.locator(f'tr[data-rule="{label}"]').count() == 0
    sidebar.get_by_label("Remove rule tcp 8786 from 10.3.0.0/16").click()
    sidebar.locator(".cj-rules .cj-empty").wait_for()


def run_cell(lab_page, source: str):
    """Type ``source`` into a new cell of the open notebook, run it, return its output area."""
    page = lab_page.page
    cells = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell")
    cell = cells.nth(cells.count() - 1)
    cell.locator(".cm-content").click()
    page.keyboard.insert_text(source)
    page.keyboard.press("Shift+Enter")
    return cell.locator(".jp-OutputArea-output")


def new_notebook(lab_page) -> None:
    lab_page.command("notebook:create-new", {"kernelName": "python3"})
    page = lab_page.page
    page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell").first.wait_for()
    page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=60_000)


def test_a_magic_renders_natively_and_the_sidebar_sees_its_apply(lab_page, cloud):
    new_notebook(lab_page)
    output = run_cell(
        lab_page,
        "%load_ext coiled_jupyter\n"
        "%coiled_ingress set [{ports: [8786, 8787], cidr: 10.4.0.0/16, description: from-kernel}]"
        " --cluster lab-shared\n"
        "%coiled_ingress apply --cluster lab-shared",
    )
    rendered = output.locator(".cj-rendered")
    rendered.wait_for(timeout=60_000)
    # The MIME renderer, not the HTML twin.
    assert output.locator(".jp-RenderedHTMLCommon").count() == 0
    assert rendered.get_attribute("data-kind") == "apply"
    assert "sandbox: not AWS" in rendered.inner_text()
    ports = rendered.locator("td[data-column=ports]").all_inner_texts()
    rendered.get_by_label("Sort by Port").click()
    assert rendered.locator("th[data-column=ports]").get_attribute("aria-sort") == "ascending"
    rendered.get_by_label("Sort by Port").click()
    assert rendered.locator("th[data-column=ports]").get_attribute("aria-sort") == "descending"
    resorted = rendered.locator("td[data-column=ports]").all_inner_texts()
    assert (
        sorted(resorted, key=lambda p: -1 if p == "all" else int(p.split("-")[0]), reverse=True)
        == resorted
    )
    assert sorted(ports) == sorted(resorted)
    lab_page.screenshot("notebook-light")
    lab_page.theme("JupyterLab Dark")
    lab_page.screenshot("notebook-dark")
    lab_page.theme("JupyterLab Light")

    # One state: the server's sidebar reads the cloud the kernel changed.
    sidebar = open_sidebar(lab_page, "lab-shared")
    in_cloud = sidebar.get_by_label("Rules in the cloud")
    in_cloud.locator("tr", has_text="10.4.0.0/16").wait_for()
    assert "from-kernel" in in_cloud.inner_text()


def test_the_settings_view_leads_with_the_table_and_folds_the_rest(lab_page):
    """A magic's settings view in Lab: the table, one verdict line, the warning and its command as
    code (no backticks); layers, notes and reasons folded until asked for, or opened by -v."""
    new_notebook(lab_page)
    output = run_cell(
        lab_page, "%load_ext coiled_jupyter\n%coiled_ingress --cluster lab-calm  # the default"
    )
    rendered = output.locator(".cj-rendered")
    rendered.wait_for(timeout=60_000)
    assert rendered.get_attribute("data-kind") == "settings"
    details = rendered.locator("details.cj-details")
    assert details.get_attribute("open") is None
    layers = details.locator("li", has_text="layer built-in default")
    expect(layers).not_to_be_visible()
    shown = rendered.inner_text()
    assert "can this notebook reach the scheduler (port 8786)? " in shown
    assert "`" not in shown and "layer " not in shown
    assert rendered.locator(".cj-commands code").all_inner_texts() == [
        "%coiled_ingress add 8786,8787 me --cluster lab-calm"
    ]
    lab_page.screenshot("settings-calm-light")
    details.locator("summary").click()
    expect(layers).to_be_visible()
    lab_page.theme("JupyterLab Dark")
    lab_page.screenshot("settings-calm-opened-dark")
    lab_page.theme("JupyterLab Light")
    verbose = run_cell(lab_page, "%coiled_ingress -v --cluster lab-calm").locator(".cj-rendered")
    verbose.wait_for(timeout=60_000)
    expect(verbose.locator("li", has_text="layer built-in default")).to_be_visible()


def sidebar_settings_into_a_cell(lab_page, cluster: str, network: str, description: str):
    """The sidebar sets tcp 8786,8787 from ``network`` and the private toggle for ``cluster``; a new
    notebook loads the extension (``x`` holds a notebook variable); the palette inserts the
    sidebar's cell as the third cell. Returns the sidebar and the notebook's cells."""
    sidebar = open_sidebar(lab_page, cluster)
    add_rule(sidebar, "8786,8787", network, description)
    sidebar.locator(f'tr[data-rule="tcp 8787 from {network}"]').wait_for()
    sidebar.get_by_label("Public scheduler IP").uncheck()
    expect(sidebar.locator(".cj-help", has_text="Now private")).to_be_visible()
    new_notebook(lab_page)
    loaded = run_cell(lab_page, "%load_ext coiled_jupyter\nx = 'a notebook variable'\nprint('ok')")
    expect(loaded).to_contain_text("ok", timeout=60_000)
    lab_page.command("coiled-jupyter:insert-ingress-cell")
    cells = lab_page.page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell")
    expect(cells).to_have_count(3)
    return sidebar, cells


def test_the_palette_inserts_the_sidebar_settings_as_a_cell_that_runs(lab_page):
    _, cells = sidebar_settings_into_a_cell(lab_page, "lab-cell", "10.7.0.0/16", "team VPN")
    page = lab_page.page
    source = cells.nth(2).locator(".cm-content")
    expect(source).to_contain_text("%%coiled_ingress --cluster lab-cell")
    expect(source).to_contain_text("use_scheduler_public_ip: false")
    page.keyboard.press("Shift+Enter")
    rendered = cells.nth(2).locator(".jp-OutputArea-output .cj-rendered")
    rendered.wait_for(timeout=60_000)
    assert rendered.get_attribute("data-kind") == "settings"
    text = rendered.inner_text()
    assert "10.7.0.0/16" in text and "team VPN" in text
    assert "use_scheduler_public_ip: false" in text


@pytest.mark.parametrize("where", ["sidebar", "notebook"])
def test_a_description_added_by_hand_shows_as_text_and_never_runs(
    lab_page, cloud, add_by_hand, where
):
    cluster = f"lab-hostile-{where}"
    sidebar = open_sidebar(lab_page, cluster)
    add_rule(sidebar, "8786", "10.5.0.0/16")
    sidebar.locator('tr[data-rule="tcp 8786 from 10.5.0.0/16"]').wait_for()
    sidebar.get_by_label("Apply", exact=True).click()
    sidebar.get_by_label("Rules in the cloud").locator("tr", has_text="10.5.0.0/16").wait_for()
    group_id = cloud.ec2.describe_security_groups(
        Filters=[{"Name": "tag:coiled-jupyter:cluster", "Values": [cluster]}]
    )["SecurityGroups"][0]["GroupId"]
    add_by_hand(cloud.ec2, group_id, 9000, "10.6.0.0/16", HOSTILE_DESCRIPTION)

    if where == "sidebar":
        sidebar.get_by_label("Refresh").click()
        table = sidebar.get_by_label("Rules in the cloud")
    else:
        new_notebook(lab_page)
        output = run_cell(
            lab_page, f"%load_ext coiled_jupyter\n%coiled_ingress describe --cluster {cluster}"
        )
        table = output.locator(".cj-rendered")
    cell = table.locator("td[data-column=description]", has_text="onerror")
    cell.wait_for()
    # Shown exactly as stored: had it been parsed as HTML, the entities would have turned into '<'.
    assert cell.inner_text() == HOSTILE_DESCRIPTION
    assert cell.evaluate("node => node.children.length") == 0
    assert lab_page.page.locator("img[src=x]").count() == 0
    assert re.search(r"alert\(", cell.inner_text())


# Not bound by AWS's character set: text that would run if any field were parsed as HTML.
MARKUP = "<img src=x onerror=alert(7)><script>alert(8)</script>"
EVERY_KIND = r"""
from IPython.display import display
M = "application/vnd.coiled-jupyter.rules+json"
X = {markup!r}
def payload(kind, **extra):
    row = {{"protocol": "tcp", "ports": "8786", "source": "10.1.0.0/16", "description": X,
            "origin": X, "action": "add"}}
    return {{"version": 1, "kind": kind, "backend": "aws", "backend_label": "aws " + X,
             "region": "us-east-1", "cluster": X, "account_id": "123456789012",
             "summary": X, "rows": [row, dict(row, ports="80", action="keep")],
             "notes": [X], "warnings": [X], **extra}}
for kind in ("rules", "plan", "apply", "save", "destroy", "scheduler"):
    display({{M: payload(kind)}}, raw=True)
display({{M: payload("settings", ingress_origin=X, use_scheduler_public_ip=False,
    use_scheduler_public_ip_origin=X, layers=[{{"layer": X, "sets": [X]}}],
    reachability={{"scheduler": {{"name": "scheduler", "port": 8786, "verdict": "no",
    "reason": X}}}})}}, raw=True)
"""


def test_every_kind_renders_with_every_field_as_text(lab_page):
    new_notebook(lab_page)
    output = run_cell(lab_page, EVERY_KIND.format(markup=MARKUP).strip())
    kinds = ["rules", "plan", "apply", "save", "destroy", "scheduler", "settings"]
    rendered = output.locator(".cj-rendered")
    expect(rendered).to_have_count(len(kinds), timeout=60_000)
    assert [r.get_attribute("data-kind") for r in rendered.all()] == kinds
    for one in rendered.all():
        text = one.inner_text()
        assert text.count(MARKUP) >= 3, text  # cluster, summary, a warning at least
        assert "backend aws" in text and "not AWS" not in text
    assert output.locator("img, script").count() == 0
    plan = rendered.nth(1)
    assert plan.locator("th").all_inner_texts()[0] == "Action"
    plan.get_by_label("Sort by Port").click()
    assert plan.locator("td[data-column=ports]").all_inner_texts() == ["80", "8786"]
    lab_page.screenshot("every-kind-light")


REHEARSAL = r"""
from coiled_jupyter.provision.target import target
from coiled_jupyter.rehearsal.result import RehearsalResult, Row
agreed = Row("inside 10.1.0.0/16", "10.1.0.5", "scheduler", 8786, "yes", "r", "yes", 0.1,
             "connected", "distributed.Client")
wrong = Row({markup!r}, "198.51.100.7", "dashboard", 8787, "no", "r", "yes", 0.2,
            "HTTP 200", "HTTP GET")
RehearsalResult(target("rehearsed"), "rehearsed with packets", (agreed, wrong))
"""


def test_a_rehearsal_renders_natively_with_a_disagreement_marked(lab_page):
    new_notebook(lab_page)
    output = run_cell(lab_page, REHEARSAL.format(markup=MARKUP).strip())
    rendered = output.locator('.cj-rendered[data-kind="rehearsal"]')
    expect(rendered).to_have_count(1, timeout=60_000)
    headers = rendered.locator("th").all_inner_texts()
    assert headers == [
        "Source",
        "Address",
        "Port",
        "Predicted",
        "Measured",
        "Time",
        "What happened",
    ]
    rows = rendered.locator("tbody tr")
    assert rows.nth(0).get_attribute("class") in (None, "")
    assert "cj-disagree" in rows.nth(1).get_attribute("class")
    assert MARKUP in rows.nth(1).inner_text()  # shown as text, never as markup
    assert output.locator("img, script").count() == 0


@pytest.mark.skipif(namespaces.unavailable() is not None, reason=namespaces.unavailable() or "")
def test_sidebar_rehearses_the_applied_group_with_packets(lab_page, cloud):
    before = set(namespaces.listed())
    sidebar = open_sidebar(lab_page, "lab-rehearsal")
    add_rule(sidebar, "8786", "10.1.0.0/16")
    sidebar.locator('.cj-rules tr[data-rule="tcp 8786 from 10.1.0.0/16"]').wait_for()
    sidebar.get_by_label("Apply", exact=True).click()
    sidebar.get_by_label("Rules in the cloud").locator("tr", has_text="10.1.0.0/16").wait_for()
    try:
        sidebar.get_by_label("Rehearse with packets").click()
        result = sidebar.get_by_label("Result").locator('.cj-rendered[data-kind="rehearsal"]')
        result.wait_for(timeout=90_000)
        row = result.locator("tbody tr", has_text="10.1.0.5").filter(has_text="8786 (scheduler)")
        cells = row.locator("td").all_inner_texts()
        assert cells[3:5] == ["yes", "yes"], cells
        assert "all as predicted" in result.inner_text()
        assert result.locator("tr.cj-disagree").count() == 0
    finally:
        # The server's rehearsal would stay up until it is idle; the test leaves nothing behind.
        namespaces.remove(sorted(set(namespaces.listed()) - before))
    assert set(namespaces.listed()) <= before


def test_sidebar_kind_control_and_coileds_current_page_example(lab_page, cloud):
    """Issue 18: the sidebar's kind control; 22 and 443 from 10.1.0.0/16 (Coiled's current page)
    warned about on a Dask cluster before Apply, fine on a Coiled cluster, and applied as written."""
    sidebar = open_sidebar(lab_page, "lab-kind")
    kind = sidebar.get_by_label("Cluster kind")
    ports = sidebar.get_by_label("Ports assumed")
    kind.select_option("dask")
    expect(ports).to_contain_text("kind dask (notebook session (this Jupyter server))")
    add_rule(sidebar, "22,443", "10.1.0.0/16")
    sidebar.locator('tr[data-rule="tcp 443 from 10.1.0.0/16"]').wait_for()
    notes = sidebar.get_by_label("Settings notes")
    expect(notes).to_contain_text("these rules open 22 and 443 only, so no client will connect")
    kind.select_option("coiled")
    expect(ports).to_contain_text("scheduler 443 (TLS), dashboard 443 (HTTPS)")
    expect(notes).not_to_contain_text("no client will connect")
    sidebar.get_by_label("Apply", exact=True).click()
    sidebar.get_by_label("Rules in the cloud").locator("tr", has_text="443").first.wait_for()
    assert group_rules(cloud, "lab-kind") == [(22, "10.1.0.0/16"), (443, "10.1.0.0/16")]


def test_the_lab_renderer_has_the_columns_and_titles_of_the_python_tables(lab_page):
    """TypeScript and Python each name the tables' columns and titles: the same payloads give the
    same ones (issue 17 item 8)."""
    from coiled_jupyter import display

    new_notebook(lab_page)
    output = run_cell(lab_page, EVERY_KIND.format(markup="x").strip())
    rendered = output.locator(".cj-rendered")
    expect(rendered).to_have_count(7, timeout=60_000)
    row = {"protocol": "tcp", "ports": "8786", "source": "10.1.0.0/16", "description": "x"}
    row.update(origin="x", action="add")
    for one in rendered.all():
        kind = one.get_attribute("data-kind")
        data = {"kind": kind, "rows": [row, dict(row, ports="80", action="keep")]}
        columns = [title for _, title in display._columns(data)]
        assert one.locator("th").all_inner_texts() == columns, kind
        assert one.locator(".cj-title").inner_text() == display._TITLES[kind]
