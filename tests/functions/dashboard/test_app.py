"""Every dashboard route: no session → sign-in; a POST without the CSRF token → 403.

The routes are read from the dashboard app itself, so a page added later is covered the day it
is served. Only the sign-in page and the static files are public.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest
from starlette.routing import Mount, Route

from functions.context import Context
from functions.dashboard.app import create_dashboard, is_dashboard_path
from functions.dashboard.render import HTMX_FILE, STATIC_DIR
from shared.settings import Settings

PUBLIC = {
    ("GET", "/dashboard/sign-in"),
    ("POST", "/dashboard/sign-in"),
    ("POST", "/dashboard/sign-out"),
}


def dashboard_routes() -> list[tuple[str, str]]:
    app = create_dashboard(lambda: Context(Settings.load()))
    found = []
    [mount] = app.routes
    assert isinstance(mount, Mount)
    for route in mount.routes:
        if isinstance(route, Route):
            for method in sorted((route.methods or set()) - {"HEAD"}):
                found.append((method, mount.path + route.path))
    return found


ROUTES = dashboard_routes()


def concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "x1", path)


@pytest.mark.parametrize("method,path", ROUTES, ids=[f"{m} {p}" for m, p in ROUTES])
def test_every_page_needs_a_session(browser, method, path) -> None:
    if (method, path) in PUBLIC:
        return
    response = browser.client.request(method, concrete(path), follow_redirects=False)
    assert response.status_code == 303, (method, path)
    assert response.headers["location"].startswith("/dashboard/sign-in")


@pytest.mark.parametrize("path", [p for m, p in ROUTES if m == "POST" and (m, p) not in PUBLIC])
def test_every_post_needs_the_csrf_token(signed_in, path) -> None:
    response = signed_in.post(concrete(path), {"name": "x"}, csrf=False)
    assert response.status_code == 403, path
    wrong = signed_in.post(concrete(path), {"name": "x", "csrf_token": "forged"}, csrf=False)
    assert wrong.status_code == 403, path


def test_htmx_is_the_vendored_pinned_file() -> None:
    vendored = (STATIC_DIR / "VENDORED.md").read_text()
    digest = hashlib.sha256((STATIC_DIR / HTMX_FILE).read_bytes()).hexdigest()
    assert f"`{HTMX_FILE}`" in vendored and digest in vendored


def test_static_files_are_served_without_a_session(browser) -> None:
    for name in (HTMX_FILE, "dashboard.js", "dashboard.css"):
        response = browser.get(f"/dashboard/static/{name}")
        assert response.status_code == 200, name
        assert response.content == (STATIC_DIR / name).read_bytes()


def test_templates_use_no_inline_script_or_style() -> None:
    """The CSP forbids them; a template that used one would break in a real browser."""
    for template in (Path(STATIC_DIR).parent / "templates").glob("*.html"):
        text = template.read_text()
        assert "<script>" not in text and " on" + "click=" not in text, template.name
        assert "<style" not in text and ' style="' not in text, template.name
        for match in re.finditer(r"<script[^>]*>", text):
            assert "src=" in match.group(0), template.name


def test_only_dashboard_paths_are_taken() -> None:
    assert is_dashboard_path("/dashboard") and is_dashboard_path("/dashboard/keys")
    assert not is_dashboard_path("/dashboards") and not is_dashboard_path("/api/dashboard")
