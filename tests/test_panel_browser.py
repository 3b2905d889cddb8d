"""The firewall panel in a real JupyterLab, driven by Debian's chromium through Python playwright.

A person's path: open a notebook, run ``%coiled_firewall``, type a network with host bits, read the
sentence, fix it, click Apply, see the applied row. And the draft: typed key by key, nothing reaches
the kernel's session until the person commits the field (Enter or leaving it), and then only what was
written, never a prefix. Screenshots in the light and dark themes, at 800 px
wide, go to ``test-artifacts/`` (gitignored). Any JavaScript error in the console fails the test.
Skipped when chromium or playwright is missing; never downloads a browser.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import nbformat
import pytest
from labserver import CHROMIUM, CHROMIUM_FLAGS

playwright = pytest.importorskip("playwright.sync_api")

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
CLUSTER = "lab-panel"
DRAFT_CLUSTER = "lab-draft"
SOURCE = "source (CIDR, address, me, everyone)"
WIDTH = 800

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed")


@pytest.fixture(scope="module")
def lab(tmp_path_factory, sandbox_server):
    """A JupyterLab of this module's own, its kernels on the tests' sandbox and a Dask config
    folder of their own."""
    from labserver import running_lab

    home = tmp_path_factory.mktemp("lab")
    dask_config = home / "dask-config"
    dask_config.mkdir()
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.upper().startswith("DASK_COILED__")
    }
    env["DASK_CONFIG"] = str(dask_config)
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [
        nbformat.v4.new_code_cell(f"%load_ext coiled_jupyter\n%coiled_firewall --cluster {CLUSTER}")
    ]
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3"}
    (home / "notebooks").mkdir()
    nbformat.write(notebook, home / "notebooks" / "panel.ipynb")
    notebook.cells = [
        nbformat.v4.new_code_cell(
            f"%load_ext coiled_jupyter\n%coiled_firewall --cluster {DRAFT_CLUSTER}"
        )
    ]
    nbformat.write(notebook, home / "notebooks" / "draft.ipynb")
    with running_lab(home, env) as url:
        yield {"url": url, "root": home / "notebooks"}


@pytest.fixture
def page(lab):
    """A chromium page 800 px wide that collects every console error and uncaught exception."""
    with playwright.sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        try:
            tab = browser.new_page(viewport={"width": WIDTH, "height": 1200})
            tab.errors = []
            tab.on("console", lambda m: m.type == "error" and tab.errors.append(m.text))
            tab.on("pageerror", lambda e: tab.errors.append(str(e)))
            yield tab
        finally:
            browser.close()


def _wait_for_idle_kernel(page) -> None:
    page.wait_for_function(
        "() => { const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;"
        " const k = w && w.sessionContext && w.sessionContext.session"
        " && w.sessionContext.session.kernel; return k && k.status === 'idle'; }",
        timeout=60_000,
    )


def _theme(page, name: str) -> None:
    page.evaluate(
        "name => window.jupyterapp.commands.execute('apputils:change-theme', {theme: name})", name
    )
    page.wait_for_function(
        "dark => document.body.dataset.jpThemeLight === String(!dark)", arg="Dark" in name
    )
    page.wait_for_timeout(500)  # the theme's stylesheet applies after the flag flips


def _shoot(page, name: str) -> Path:
    """The first cell's outputs (the panel, and the plain output below it) as one image."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    page.locator(".jp-Cell-outputWrapper:visible").first.screenshot(path=str(path))
    return path


def test_panel_in_jupyterlab(lab, page, sandbox, cloud):
    page.goto(f"{lab['url']}/lab/tree/panel.ipynb")
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
    _wait_for_idle_kernel(page)
    # The notebook gets the whole 800 px: the file browser is closed, as on a small laptop screen.
    page.evaluate("() => window.jupyterapp.commands.execute('application:toggle-left-area')")
    page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")

    source = page.get_by_placeholder(SOURCE).first
    source.wait_for(timeout=60_000)
    apply = page.get_by_role("button", name="Apply", exact=True)

    # A network with host bits: the sentence beside the row once it is committed, Apply disabled.
    source.fill("")
    source.press_sequentially("10.1.0.2/16", delay=15)
    source.press("Enter")
    sentence = page.get_by_text("did you mean '10.1.0.0/16'?")
    sentence.wait_for()
    assert "with host bits set" in sentence.inner_text()
    assert apply.is_disabled()
    _shoot(page, "panel-invalid-light.png")

    # Fixed: the sentence goes, Apply comes back; Apply shows the group's rules as read back.
    source.fill("10.1.0.0/16")
    source.press("Tab")
    sentence.wait_for(state="detached")
    page.wait_for_function(
        "() => [...document.querySelectorAll('button.widget-button')]"
        ".some(b => b.textContent.trim() === 'Apply' && !b.disabled)"
    )
    apply.click()
    panel = page.locator(".cj-firewall-panel")
    panel.get_by_text("Firewall applied").wait_for(timeout=60_000)
    # The core's table: drawn by the lab extension's renderer when it is installed, else the HTML twin.
    applied_row = panel.locator(
        ".cj-rendered tbody tr, .cj-result tbody tr", has_text="10.1.0.0/16"
    )
    assert applied_row.count() == 1
    assert "8786-8787" in applied_row.inner_text()
    _shoot(page, "panel-applied-light.png")

    # The cell's own output (not widget state) holds the applied table too, for saved notebooks.
    record = page.locator(
        ".jp-OutputArea-output:not(:has(.cj-firewall-panel))", has_text="Firewall applied"
    )
    record.first.wait_for(timeout=10_000)

    # The group in the sandbox, read with boto3 clients of the test's own.
    groups = cloud.ec2.describe_security_groups()["SecurityGroups"]
    cidrs = {
        r["CidrIp"]
        for g in groups
        if CLUSTER in g["GroupName"]
        for p in g["IpPermissions"]
        for r in p["IpRanges"]
    }
    assert cidrs == {"10.1.0.0/16"}

    _theme(page, "JupyterLab Dark")
    _shoot(page, "panel-applied-dark.png")
    page.screenshot(path=str(ARTIFACTS / "lab-dark.png"))
    _theme(page, "JupyterLab Light")
    page.screenshot(path=str(ARTIFACTS / "lab-light.png"))
    panel.screenshot(path=str(ARTIFACTS / "panel-light.png"))

    # Saved, the notebook carries the applied table as a plain output with the rules mimetype.
    page.evaluate("() => window.jupyterapp.commands.execute('docmanager:save')")
    page.wait_for_timeout(1000)
    saved = json.loads((lab["root"] / "panel.ipynb").read_text())
    kinds = [
        output["data"]["application/vnd.coiled-jupyter.rules+json"]["kind"]
        for output in saved["cells"][0]["outputs"]
        if "application/vnd.coiled-jupyter.rules+json" in output.get("data", {})
    ]
    assert kinds == ["apply"]

    assert page.errors == []


def _in_kernel(page, code: str, path: str = "draft.ipynb") -> str:
    """Run ``code`` in the kernel of the notebook ``path`` behind the page's back (no cell, no focus
    change) and return what it printed. The kernel handles messages in order, so every widget change
    the browser sent before is handled first."""
    return page.evaluate(
        """async ([code, path]) => {
            const panel = [...window.jupyterapp.shell.widgets('main')]
                .find(w => w.context && w.context.path === path);
            const kernel = panel.sessionContext.session.kernel;
            const future = kernel.requestExecute({code, store_history: false});
            let out = '';
            future.onIOPub = msg => {
                if (msg.header.msg_type === 'stream') { out += msg.content.text; }
                if (msg.header.msg_type === 'error') { out += msg.content.evalue; }
            };
            await future.done;
            return out;
        }""",
        [code, path],
    )


# Every change the kernel's session hears, as text; and the panel, waited for (its edit thread).
# The observer also reads the older one-session form (the values themselves, no cluster), so that
# this test fails on a panel that sends keystrokes for that reason, not for the observer's.
_LISTEN = """
import gc
from coiled_jupyter import session as _s
from coiled_jupyter.widgets import FirewallPanel
_panels = [o for o in gc.get_objects() if isinstance(o, FirewallPanel)]
assert len(_panels) == 1, _panels
_heard = []
def _hear(change):
    values = getattr(change, "values", change)
    _heard.append((getattr(change, "cluster", "?"), [str(r) for r in (values.ingress or ())]))
_s.subscribe(_hear)
"""
_HEARD = """
assert _panels[0].wait(30)
print(repr(_heard))
"""


def test_panel_draft_typed_key_by_key(lab, page, sandbox):
    # ?reset: a workspace of its own, so that the other test's notebook is not restored beside it
    # (and made the current one).
    page.goto(f"{lab['url']}/lab/tree/draft.ipynb?reset")
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
    _wait_for_idle_kernel(page)
    page.evaluate("() => window.jupyterapp.commands.execute('application:toggle-left-area')")
    page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
    panel = page.locator(".cj-firewall-panel:visible")  # the lab reopens the other notebook too
    panel.get_by_placeholder(SOURCE).first.wait_for(timeout=60_000)
    _wait_for_idle_kernel(page)
    assert _in_kernel(page, _LISTEN) == ""

    panel.get_by_role("button", name="Add rule").click()
    ports = panel.get_by_placeholder("ports").nth(1)  # the new row, once the kernel has drawn it
    source = panel.get_by_placeholder(SOURCE).nth(1)
    ports.wait_for()
    ports.click()
    ports.press_sequentially("9100", delay=20)
    source.click()  # leaving the ports field commits it: a row without a source is not a rule
    source.press_sequentially("10.20.0.5/16", delay=20)
    # Typed, not committed: the session heard nothing, though "10.20.0.5" was a valid prefix.
    assert _in_kernel(page, _HEARD).strip() == "[]"

    source.press("Enter")
    sentence = panel.get_by_text("did you mean '10.20.0.0/16'?")
    sentence.wait_for()
    assert _in_kernel(page, _HEARD).strip() == "[]"  # committed but invalid: still nothing
    _shoot(page, "panel-draft-invalid-light.png")
    _theme(page, "JupyterLab Dark")
    _shoot(page, "panel-draft-invalid-dark.png")
    _theme(page, "JupyterLab Light")

    source.fill("")  # an input event only: with continuous_update=False nothing is sent
    source.press_sequentially("10.20.0.0/16", delay=20)
    assert _in_kernel(page, _HEARD).strip() == "[]"
    source.press("Tab")  # leaving the field commits the row as written
    sentence.wait_for(state="detached")
    heard = _in_kernel(page, _HEARD)
    assert "tcp 9100 from 10.20.0.0/16" in heard, heard
    assert "10.20.0.5" not in heard
    assert heard.count(DRAFT_CLUSTER) == 1  # one change, for this cluster
    _shoot(page, "panel-draft-committed-light.png")
    _theme(page, "JupyterLab Dark")
    _shoot(page, "panel-draft-committed-dark.png")
    _theme(page, "JupyterLab Light")
    assert page.errors == []
