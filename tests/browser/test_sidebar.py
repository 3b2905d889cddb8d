"""The sidebar keeps up: drafts reach the session only when committed, every operation shows progress
and disabled buttons, a kernel's apply shows without Refresh, the cluster survives a reload, refusals
are the core's sentences, Destroy asks first, and a lab where nobody opens it starts nothing.

Each test ends with no JavaScript error and no dialog (see ``lab_page`` in conftest.py)."""

from __future__ import annotations

import json
import os
import re
import urllib.parse
from pathlib import Path

import pytest
from labserver import _DIRECT
from playwright.sync_api import expect
from test_lab import (
    SIDEBAR,
    SIDEBAR_TAB,
    add_rule,
    group_rules,
    new_notebook,
    open_sidebar,
    run_cell,
    sidebar_settings_into_a_cell,
)


def server_settings(lab: str, cluster: str) -> list[tuple[str, str, str]]:
    """The rules the server's session holds for ``cluster``, read past the browser."""
    query = urllib.parse.urlencode({"cluster": cluster})
    with _DIRECT.open(f"{lab}/coiled-jupyter/api/settings?{query}", timeout=30) as answer:
        data = json.load(answer)
    return [(row["ports"], row["source"], row["description"]) for row in data["rows"]]


def show_sidebar(lab_page):
    page = lab_page.page
    sidebar = page.locator(SIDEBAR)
    if not sidebar.is_visible():
        page.click(SIDEBAR_TAB)
    sidebar.wait_for(state="visible")
    return sidebar


def test_a_rule_reaches_the_session_only_when_committed_and_as_written(lab, lab_page):
    sidebar = open_sidebar(lab_page, "lab-draft")
    ports, source = sidebar.get_by_label("New rule ports"), sidebar.get_by_label("New rule source")
    ports.press_sequentially("9100")
    # Typed key by key: every prefix (10.2, 10.20.0.5, ...) would be a valid rule of its own.
    source.press_sequentially("10.20.0.5/16")
    error = sidebar.get_by_label("New rule error")
    expect(error).to_contain_text("host bits")
    assert all(row[0] != "9100" for row in server_settings(lab, "lab-draft"))

    # Enter commits what is written, and what is written is refused: the session is unchanged.
    source.press("Enter")
    expect(sidebar.get_by_label("Status")).to_be_empty()
    expect(error).to_contain_text("10.20.0.0/16")
    assert all(row[0] != "9100" for row in server_settings(lab, "lab-draft"))

    source.fill("10.20.0.0/16")
    source.press("Enter")
    sidebar.locator('tr[data-rule="tcp 9100 from 10.20.0.0/16"]').wait_for()
    assert server_settings(lab, "lab-draft") == [("9100", "10.20.0.0/16", "")]
    expect(ports).to_have_value("")


def test_plan_commits_the_rule_being_written_first(lab, lab_page):
    sidebar = open_sidebar(lab_page, "lab-draft-plan")
    add_rule(sidebar, "9200", "10.21.0.0/16")
    sidebar.locator('tr[data-rule="tcp 9200 from 10.21.0.0/16"]').wait_for()
    sidebar.get_by_label("New rule ports").fill("9300")
    sidebar.get_by_label("New rule source").fill("10.22.0.0/16")
    sidebar.get_by_label("Plan", exact=True).click()
    plan = sidebar.get_by_label("Result").locator('[data-kind="plan"]')
    expect(plan).to_contain_text("10.22.0.0/16")
    expect(plan).to_contain_text("10.21.0.0/16")
    assert sorted(server_settings(lab, "lab-draft-plan")) == [
        ("9200", "10.21.0.0/16", ""),
        ("9300", "10.22.0.0/16", ""),
    ]
    # A draft that is not valid stops the plan, with its sentence next to it.
    sidebar.get_by_label("New rule ports").fill("9400")
    sidebar.get_by_label("New rule source").fill("10.23.0.9/16")
    sidebar.get_by_label("Plan", exact=True).click()
    expect(sidebar.get_by_label("New rule error")).to_contain_text("host bits")
    expect(sidebar.get_by_label("Status")).to_contain_text("Nothing was planned")
    assert len(server_settings(lab, "lab-draft-plan")) == 2


def test_every_operation_shows_progress_and_disabled_buttons_that_look_disabled(lab_page, cloud):
    sidebar = open_sidebar(lab_page, "lab-busy")
    add_rule(sidebar, "8786", "10.30.0.0/16", "office")
    sidebar.locator('tr[data-rule="tcp 8786 from 10.30.0.0/16"]').wait_for()
    apply = sidebar.get_by_label("Apply", exact=True)
    enabled = style_of(apply)

    held = []
    page = lab_page.page
    page.route("**/coiled-jupyter/api/apply*", lambda route: held.append(route))
    apply.click()
    progress = sidebar.get_by_label("Progress")
    expect(progress).to_be_visible()
    expect(progress).to_contain_text("Applying")
    for name in ("Plan", "Apply", "Refresh", "Add rule", "Save", "Reset session edits"):
        expect(sidebar.get_by_label(name, exact=True)).to_be_disabled()
    expect(sidebar.get_by_label("Public scheduler IP")).to_be_disabled()
    disabled = style_of(apply)
    assert disabled != enabled, "a disabled Apply looks like an enabled one"
    assert float(disabled["opacity"]) < 1
    lab_page.screenshot("sidebar-busy-light")
    lab_page.theme("JupyterLab Dark")
    assert float(style_of(apply)["opacity"]) < 1
    lab_page.screenshot("sidebar-busy-dark")
    lab_page.theme("JupyterLab Light")
    assert len(held) == 1
    held[0].continue_()

    cloud_row = sidebar.get_by_label("Rules in the cloud").locator("tr", has_text="10.30.0.0/16")
    cloud_row.wait_for()
    expect(progress).to_be_hidden()
    expect(apply).to_be_enabled()
    assert group_rules(cloud, "lab-busy") == [(8786, "10.30.0.0/16")]
    # The applied table shows once, in "In the cloud".
    assert sidebar.locator("tr", has_text="10.30.0.0/16").count() == 2  # settings + cloud
    header = sidebar.locator(".cj-header").first
    expect(header).not_to_contain_text("account unknown")


def style_of(locator) -> dict:
    return locator.evaluate(
        "node => { const s = getComputedStyle(node); return {opacity: s.opacity, "
        "color: s.color, background: s.backgroundColor, cursor: s.cursor}; }"
    )


def test_a_kernel_apply_and_save_show_without_refresh(lab_page, cloud):
    sidebar = open_sidebar(lab_page, "lab-follow")
    expect(sidebar.get_by_label("Rules in the cloud")).to_contain_text("no security group yet")
    new_notebook(lab_page)
    output = run_cell(
        lab_page,
        "%load_ext coiled_jupyter\n"
        "%coiled_ingress set [{ports: [8786], cidr: 10.40.0.0/16, description: kernel}]"
        " --cluster lab-follow\n"
        "%coiled_ingress apply --cluster lab-follow",
    )
    output.locator(".cj-rendered").wait_for(timeout=60_000)
    # No Refresh: the sidebar sees the change count grow and reads the cloud again.
    in_cloud = sidebar.get_by_label("Rules in the cloud")
    expect(in_cloud.locator("tr", has_text="10.40.0.0/16")).to_be_visible()
    assert "kernel" in in_cloud.inner_text()

    # A kernel's save to the Dask config file (the lab's, shared with its kernels): the server's
    # settings read that file. The file is removed afterwards: the other tests share this lab.
    sidebar.get_by_label("Reset session edits").click()
    expect(sidebar.get_by_label("Progress")).to_be_hidden()
    folder = run_cell(lab_page, "import os\nprint(os.environ['DASK_CONFIG'])")
    expect(folder).to_contain_text("dask-config")
    saved = Path(folder.inner_text().strip()) / "coiled.yaml"
    try:
        run_cell(lab_page, "%coiled_ingress save --cluster lab-follow")
        expect(sidebar.locator(".cj-rules")).to_contain_text("10.40.0.0/16")
        origin = sidebar.locator(".cj-line", has_text="Rules from:")
        expect(origin).to_contain_text("coiled.yaml")
    finally:
        saved.unlink(missing_ok=True)


def test_the_sidebar_remembers_its_cluster_across_reloads(lab_page):
    open_sidebar(lab_page, "lab-remember")
    page = lab_page.page
    page.reload()
    page.wait_for_selector("#jp-main-dock-panel", timeout=60_000)
    page.wait_for_function("window.jupyterapp && window.jupyterapp.restored !== undefined")
    page.evaluate("window.jupyterapp.restored")
    sidebar = show_sidebar(lab_page)
    expect(sidebar.get_by_label("Cluster name")).to_have_value("lab-remember")
    expect(sidebar.locator(".cj-header").first).to_contain_text("cluster lab-remember")


@pytest.mark.parametrize(
    "ports, source, words",
    [
        ("8786", "", "empty cidr"),
        ("", "10.1.0.0/16", "not a port"),
        ("87x6", "10.1.0.0/16", "87x6"),
    ],
)
def test_a_refusal_is_the_core_sentence_never_the_api_wording(lab_page, ports, source, words):
    sidebar = open_sidebar(lab_page, "lab-refusal")
    sidebar.get_by_label("New rule ports").fill(ports)
    sidebar.get_by_label("New rule source").fill(source)
    sidebar.get_by_label("Add rule").click()
    error = sidebar.get_by_label("New rule error")
    expect(error).to_contain_text(words)
    assert "op '" not in error.inner_text()


def test_destroy_shows_a_plan_and_deletes_only_when_confirmed(lab_page, cloud):
    sidebar = open_sidebar(lab_page, "lab-destroy")
    add_rule(sidebar, "8786", "10.50.0.0/16", "to go")
    sidebar.locator('tr[data-rule="tcp 8786 from 10.50.0.0/16"]').wait_for()
    sidebar.get_by_label("Apply", exact=True).click()
    sidebar.get_by_label("Rules in the cloud").locator("tr", has_text="10.50.0.0/16").wait_for()

    sidebar.get_by_label("Destroy the cluster's group").click()
    plan = sidebar.get_by_label("Destroy plan")
    expect(plan).to_contain_text("Delete group sg-")
    plan.scroll_into_view_if_needed()
    row = plan.locator("tr", has_text="10.50.0.0/16")
    expect(row).to_contain_text("remove")
    lab_page.screenshot("sidebar-destroy-light")
    lab_page.theme("JupyterLab Dark")
    lab_page.screenshot("sidebar-destroy-dark")
    lab_page.theme("JupyterLab Light")
    plan.get_by_label("Cancel destroy").click()
    expect(plan).to_have_count(0)
    assert group_rules(cloud, "lab-destroy") == [(8786, "10.50.0.0/16")]

    sidebar.get_by_label("Destroy the cluster's group").click()
    plan.get_by_role("button", name="Delete group").click()
    expect(sidebar.get_by_label("Rules in the cloud")).to_contain_text("deleted group sg-")
    assert group_rules(cloud, "lab-destroy") == []
    assert not cloud.ec2.describe_security_groups(
        Filters=[{"Name": "tag:coiled-jupyter:cluster", "Values": ["lab-destroy"]}]
    )["SecurityGroups"]


@pytest.fixture
def unused_lab(tmp_path):
    """A lab of its own whose state folder holds no sandbox: whatever starts one would show."""
    from labserver import running_lab

    state = tmp_path / "state"
    (tmp_path / "dask-config").mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DASK_COILED__")}
    env["DASK_CONFIG"] = str(tmp_path / "dask-config")
    env["DASK_COILED_JUPYTER__SANDBOX__STATE_DIR"] = str(state)
    with running_lab(tmp_path, env) as url:
        yield url, state


def test_a_lab_where_nobody_asks_starts_no_sandbox(unused_lab, open_page):
    url, state = unused_lab
    asked: list[str] = []

    def record(request) -> None:
        if "/coiled-jupyter/api/" in request.url:
            asked.append(request.url.split("?")[0].rsplit("/", 1)[-1])

    page = open_page(url, on_request=record)
    # Loaded, the sidebar hidden: nothing asked of the server extension.
    page.page.wait_for_selector(SIDEBAR_TAB)
    assert asked == []
    # Opened: the settings (no cloud call), and the change count while visible.
    page.page.click(SIDEBAR_TAB)
    sidebar = page.page.locator(SIDEBAR)
    expect(sidebar.locator(".cj-header").first).to_contain_text("local sandbox: not AWS")
    expect(sidebar.get_by_label("Rules in the cloud")).to_contain_text("Not read yet")
    assert set(asked) <= {"settings", "changes"}, asked
    assert not (state / "sandbox.json").exists()
    assert not (state / "sandbox.log").exists()


REPORT = r"""
import json
from coiled_jupyter import FirewallPanel
view = %coiled_ingress --cluster lab-same
bundle = view._repr_mimebundle_()
panel = FirewallPanel("lab-same")
print(json.dumps({
    "text": bundle["text/plain"],
    "html": bundle["text/html"],
    "cell": bundle["application/vnd.coiled-jupyter.rules+json"]["copy_as_cell"],
    "panel_cell": panel.cell.value,
    "panel_header": panel.header.value,
}))
"""


def text_ports(text: str) -> list[str]:
    """The Port column of a text/plain table."""
    lines = text.splitlines()
    head = next(i for i, line in enumerate(lines) if line.split()[:2] == ["Protocol", "Port"])
    rows = []
    for line in lines[head + 2 :]:
        cells = re.split(r"\s{2,}", line.strip())
        if len(cells) < 3 or cells[0] not in ("tcp", "udp"):
            break
        rows.append(cells[1])
    return rows


def test_magic_panel_and_sidebar_show_the_same_ports_marker_and_copy_as_cell(lab_page):
    """The same settings (the sidebar's, carried into a kernel by the palette's cell) shown by the
    magic (text/plain and HTML), the panel and the sidebar."""
    sidebar, cells = sidebar_settings_into_a_cell(
        lab_page, "lab-same", "10.60.0.0/16", "cost ${x} 1e5"
    )
    page = lab_page.page
    expect(cells.nth(2).locator(".cm-content")).to_contain_text("%%coiled_ingress")
    sidebar_cell = cells.nth(2).locator(".cm-content").inner_text()
    page.keyboard.press("Shift+Enter")
    cells.nth(2).locator(".cj-rendered").wait_for(timeout=60_000)

    output = run_cell(lab_page, REPORT.strip())
    expect(output).to_contain_text('"panel_cell"', timeout=60_000)
    seen = json.loads(output.inner_text())

    # One copy-as-cell: the sidebar's (inserted by the palette), the magic's payload, the panel's.
    assert seen["cell"] == seen["panel_cell"]
    assert [line.rstrip() for line in sidebar_cell.splitlines()] == seen["cell"].splitlines()
    assert "--apply" not in seen["cell"] and "$${x}" in seen["cell"]
    assert "a notebook variable" not in seen["text"]
    assert "cost ${x} 1e5" in seen["text"]

    # One way to write ports: the magic's text and HTML tables and the sidebar's.
    in_sidebar = sidebar.locator(".cj-rules td[data-column=ports]").all_inner_texts()
    in_html = re.findall(r"<tr><td>tcp</td><td>([^<]*)</td>", seen["html"])
    assert sorted(text_ports(seen["text"])) == sorted(in_html) == sorted(in_sidebar)

    # One sandbox marker: the same words everywhere, the same pill in every view.
    marker = "local sandbox: not AWS"
    assert f'<span class="cj-sandbox-badge">{marker}</span>' in seen["html"]
    assert f">{marker}</span>" in seen["panel_header"]
    assert f"[{marker}]" in seen["text"]
    badge = sidebar.locator(".cj-header .cj-sandbox-badge")
    expect(badge).to_have_text(marker)
    rendered = cells.nth(2).locator(".cj-rendered .cj-sandbox-badge")
    expect(rendered).to_have_text(marker)
    # The same look: the lab's pill (CSS), the HTML twin's (its stylesheet) and the panel's (inline).
    look = """n => { const s = getComputedStyle(n);
        return [s.backgroundColor, s.color, s.borderTopColor, s.fontWeight]; }"""
    drawn = page.evaluate(
        """([pieces, look]) => pieces.map(html => {
            const box = document.createElement('div'); box.innerHTML = html;
            document.body.appendChild(box);
            const out = eval(look)(box.querySelector('.cj-sandbox-badge'));
            box.remove(); return out; })""",
        [[seen["html"], seen["panel_header"]], look],
    )
    assert drawn == [badge.evaluate(look)] * 2


def test_the_sidebar_lists_the_clusters_with_session_settings_and_shows_each(lab, lab_page):
    sidebar = open_sidebar(lab_page, "lab-list-a")
    add_rule(sidebar, "8786", "10.70.0.0/16", "for a")
    sidebar.locator('tr[data-rule="tcp 8786 from 10.70.0.0/16"]').wait_for()
    # Another cluster (open_sidebar would reset the one shown first).
    sidebar.get_by_label("Cluster name").fill("lab-list-b")
    sidebar.get_by_label("Cluster name").press("Enter")
    expect(sidebar.locator(".cj-header").first).to_contain_text("cluster lab-list-b")
    add_rule(sidebar, "8786", "10.71.0.0/16", "for b")
    sidebar.locator('tr[data-rule="tcp 8786 from 10.71.0.0/16"]').wait_for()
    listed = sidebar.get_by_label("Clusters with session settings")
    expect(listed.get_by_label("Show cluster lab-list-a")).to_be_visible()
    expect(listed.get_by_label("Show cluster lab-list-b")).to_be_visible()

    listed.get_by_label("Show cluster lab-list-a").click()
    expect(sidebar.get_by_label("Cluster name")).to_have_value("lab-list-a")
    expect(sidebar.locator(".cj-header").first).to_contain_text("cluster lab-list-a")
    expect(sidebar.locator(".cj-rules")).to_contain_text("10.70.0.0/16")
    expect(sidebar.locator(".cj-rules")).not_to_contain_text("10.71.0.0/16")
    # Settings for one cluster never reach another's.
    assert [r[1] for r in server_settings(lab, "lab-list-a")] == ["10.70.0.0/16"]
    assert [r[1] for r in server_settings(lab, "lab-list-b")] == ["10.71.0.0/16"]
    lab_page.screenshot("sidebar-clusters-light")
    lab_page.theme("JupyterLab Dark")
    lab_page.screenshot("sidebar-clusters-dark")
    lab_page.theme("JupyterLab Light")
