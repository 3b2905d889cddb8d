"""A real JupyterLab on 127.0.0.1 with this checkout's extension, and Debian's chromium to drive it.

The lab server (tests/labserver.py) runs in its own process with the test session's sandbox (the
moto server the ``sandbox`` and ``cloud`` fixtures use, found through the shared state dir) and a Dask
config folder of its own. Chromium is Debian's ``/usr/bin/chromium`` driven by Python playwright; no
browser is ever downloaded. Screenshots go to ``test-artifacts/`` at the top of the checkout.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from labserver import CHROMIUM, CHROMIUM_FLAGS

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
EXTENSION = "coiled-jupyter"

if not CHROMIUM.exists():
    pytest.skip(
        "browser tests need Debian's chromium at /usr/bin/chromium (apt-get install -y chromium; "
        ".ci/run installs it)",
        allow_module_level=True,
    )


def _extension_installed() -> bool:
    out = subprocess.run(
        [sys.executable, "-m", "jupyter", "labextension", "list"],
        capture_output=True,
        text=True,
    )
    return EXTENSION in out.stdout + out.stderr


@pytest.fixture(scope="module")
def lab(sandbox_server, tmp_path_factory):
    """``jupyter lab`` on a free loopback port, without a token (tests/labserver.py); yields its URL.

    The server and its kernels get the test session's sandbox folder and a Dask config folder of
    their own."""
    from labserver import running_lab

    if not _extension_installed():
        pytest.fail(
            f"the {EXTENSION} lab extension is not installed in this environment; run `make test` "
            "(its setup builds and links it) or `jupyter-builder develop --overwrite .`"
        )
    home = tmp_path_factory.mktemp("lab")
    (home / "dask-config").mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DASK_COILED__")}
    env["DASK_CONFIG"] = str(home / "dask-config")
    with running_lab(home, env) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import expect, sync_playwright

    # The first calls of a fresh server import boto3 and start kernels: on 2 busy cores, seconds.
    expect.set_options(timeout=30_000)

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        yield chromium
        chromium.close()


class Page:
    """One lab page, recording console errors, uncaught exceptions and dialogs (alert, confirm)."""

    def __init__(self, page, url: str):
        self.page = page
        self.url = url
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.errors.append(f"uncaught: {error}"))
        page.on("dialog", self._dialog)

    def _console(self, message) -> None:
        if message.type != "error":
            return
        where = message.location.get("url", "")
        # Chromium logs every non-2xx response; a 400 from our API is the server refusing a bad
        # input on purpose (its sentence is shown next to the field), not an error of the page.
        if "status of 400" in message.text and "/coiled-jupyter/api/" in where:
            return
        self.errors.append(f"console: {message.text} {where}".strip())

    def _dialog(self, dialog) -> None:
        self.dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()

    def open_lab(self) -> None:
        # ?reset: a fresh layout each time, not the notebooks and panels of the previous test.
        self.page.goto(f"{self.url}/lab?reset")
        self.page.wait_for_selector("#jp-main-dock-panel", timeout=60_000)
        self.page.wait_for_function("window.jupyterapp && window.jupyterapp.restored !== undefined")
        self.page.evaluate("window.jupyterapp.restored")

    def command(self, command: str, args: dict | None = None):
        return self.page.evaluate(
            "([c, a]) => window.jupyterapp.commands.execute(c, a)", [command, args or {}]
        )

    def theme(self, name: str) -> None:
        """Switch the theme and wait until its styles are in and the splash screen is gone."""
        self.command("apputils:change-theme", {"theme": name})
        self.page.wait_for_function(
            "name => document.body.dataset.jpThemeName === name"
            " && !document.querySelector('#jupyterlab-splash')",
            arg=name,
            timeout=30_000,
        )

    def screenshot(self, name: str) -> Path:
        ARTIFACTS.mkdir(exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        self.page.screenshot(path=str(path))
        return path


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    """Keep each phase's report on the test, so a fixture can tell that the test failed."""
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture
def open_page(request, browser):
    """``open_page(url, on_request=None)``: a lab page in a fresh browser context (a fresh local
    storage), loaded; at the end, no JavaScript error and no dialog, and a screenshot if the test
    failed. ``on_request`` sees every request the page makes, from before it loads."""
    opened: list[tuple] = []

    def open_one(url: str, on_request=None) -> Page:
        context = browser.new_context(viewport={"width": 1400, "height": 900})
        page = Page(context.new_page(), url)
        if on_request is not None:
            page.page.on("request", on_request)
        opened.append((context, page))
        page.open_lab()
        return page

    yield open_one
    report = getattr(request.node, "report_call", None)
    for context, page in opened:
        if report is not None and report.failed:
            page.screenshot(f"failed-{request.node.name}")
        context.close()
    for _, page in opened:
        assert page.errors == [], f"JavaScript errors in the page: {page.errors}"
        assert page.dialogs == [], f"a dialog opened (script from data ran?): {page.dialogs}"


@pytest.fixture
def lab_page(lab, open_page):
    return open_page(lab)
