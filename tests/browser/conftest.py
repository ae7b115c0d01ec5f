"""The dashboard in a real browser: Playwright driving Debian's ``chromium``.

Playwright's own browser download (``playwright install``) is not used: the tests launch the
system's chromium, ``AGERA_CHROMIUM`` or else ``chromium`` on the PATH (``make test`` installs the
Debian package through infra/setup/system-deps.sh). A missing browser fails the tests with a line
saying so; it never skips them.

Each test gets the API's app (and so the dashboard) under uvicorn on a free 127.0.0.1 port, at the
session's moto (the ``aws`` fixture), a fresh account with one key, and a ``Ui``: a page in a new
browser context that records every console error, page error and Content-Security-Policy
violation, and saves a full-page screenshot of each page visited in the test's ``tmp_path``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, Playwright, sync_playwright

from functions.context import Context
from shared.settings import Settings
from tests.support.api_server import LoopbackApiServer, Tenant, make_tenant

CHROMIUM_SETTING = "AGERA_CHROMIUM"
WAIT_MS = 10_000  # Playwright's bound on any one wait (navigation, selector, expect)
PHONE = {"width": 390, "height": 844}
# Reports each violation of the page's Content-Security-Policy as a console error, which the
# ``Ui`` records whatever page it was on (Chromium logs most violations itself; this catches every
# one). Playwright injects it through the DevTools protocol, which the page's CSP does not govern.
CSP_WATCH = """
document.addEventListener("securitypolicyviolation", (e) => {
  const where = e.sourceFile ? ` at ${e.sourceFile}:${e.lineNumber}:${e.columnNumber}` : "";
  console.error(`CSP violation: ${e.violatedDirective} blocked ${e.blockedURI || "inline"}${where}`);
});
"""


def chromium_path() -> str:
    """The chromium to launch: ``AGERA_CHROMIUM``, else ``chromium`` on the PATH."""
    configured = os.environ.get(CHROMIUM_SETTING, "").strip()
    path = configured or shutil.which("chromium")
    if path and os.path.isfile(path) and os.access(path, os.X_OK):
        return path
    found = (
        f"{CHROMIUM_SETTING}={configured} is not an executable file"
        if configured
        else f"{CHROMIUM_SETTING} is unset and there is no `chromium` on the PATH"
    )
    pytest.fail(
        f"no browser for the browser tests: {found}. Install the Debian package `chromium` "
        "(`make test` does, through infra/setup/system-deps.sh) or set "
        f"{CHROMIUM_SETTING} to a Chromium binary.",
        pytrace=False,
    )


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as pw:
        yield pw


@pytest.fixture(scope="module")
def chromium(playwright: Playwright) -> Iterator[Browser]:
    browser = playwright.chromium.launch(executable_path=chromium_path(), headless=True)
    yield browser
    browser.close()


@pytest.fixture
def ctx(aws: Any) -> Context:
    # No key cache: a revoked key is refused at once (the dashboard re-reads it on every request).
    return Context(Settings.load(api_key_cache_seconds=0))


@pytest.fixture
def tenant(ctx: Context) -> Tenant:
    return make_tenant(ctx, name_prefix="Browser")


@pytest.fixture
def server(ctx: Context) -> Iterator[LoopbackApiServer]:
    served = LoopbackApiServer(lambda: ctx)
    yield served
    served.close()


class Ui:
    """One browser tab on the dashboard, with its problems recorded and its pages photographed."""

    def __init__(self, page: Page, base_url: str, shots: Path) -> None:
        self.page = page
        self.base_url = base_url
        self.shots = shots
        self.problems: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.problems.append(f"page error: {error}"))
        page.add_init_script(CSP_WATCH)

    def _console(self, message: ConsoleMessage) -> None:
        if message.type in ("error", "warning"):
            self.problems.append(f"console {message.type} on {self.page.url}: {message.text}")

    def url(self, path: str) -> str:
        return self.base_url + path

    def goto(self, path: str) -> None:
        response = self.page.goto(self.url(path))
        assert response is not None and response.ok, (path, response and response.status)

    def assert_clean(self) -> None:
        """No console error or warning, page error or CSP violation so far, on any page."""
        problems, self.problems = self.problems, []  # each is reported once
        assert not problems, "\n".join(problems)

    def shot(self, name: str, *, phone: bool = False) -> Path:
        """A full-page screenshot of the page as it is now (``phone``: at 390 by 844)."""
        self.assert_clean()
        path = self.shots / f"{name}.png"
        if phone:
            wide = self.page.viewport_size
            self.page.set_viewport_size(PHONE)
            try:
                # Wide tables scroll inside their own box; the page itself never scrolls sideways.
                overflow = self.page.evaluate(
                    "document.documentElement.scrollWidth - document.documentElement.clientWidth"
                )
                assert overflow <= 0, f"{self.page.url} is {overflow} px wider than a phone"
                self.page.screenshot(path=path, full_page=True)
            finally:
                if wide is not None:
                    self.page.set_viewport_size(wide)
        else:
            self.page.screenshot(path=path, full_page=True)
        return path

    def sign_in(self, key: str) -> None:
        """Signs in from the sign-in page the way a person does, landing on the overview."""
        self.goto("/dashboard/sign-in")
        self.page.get_by_label("API key").fill(key)
        self.page.get_by_role("button", name="Sign in").click()
        self.page.wait_for_url(self.url("/dashboard/"))


@pytest.fixture
def ui(chromium: Browser, server: LoopbackApiServer, tmp_path: Path) -> Iterator[Ui]:
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(WAIT_MS)
    shots = tmp_path / "screenshots"
    shots.mkdir()
    tab = Ui(context.new_page(), server.base_url, shots)
    try:
        yield tab
        tab.assert_clean()
    finally:
        context.close()
        print(f"\nscreenshots: {shots}")
