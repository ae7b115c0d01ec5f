"""Signing in and out, the session cookie, CSRF refusals and the sign-in rate limit."""

from __future__ import annotations

import base64
import json

from functions.api.app import create_app
from functions.dashboard.security import CONTENT_SECURITY_POLICY, SESSION_COOKIE
from shared.apikeys import hash_api_key
from shared.clock import iso_z, utc_now
from shared.models import ApiKey


def session_cookie_header(response) -> str:
    cookies = [v for k, v in response.headers.multi_items() if k == "set-cookie"]
    mine = [c for c in cookies if c.startswith(SESSION_COOKIE + "=")]
    assert len(mine) == 1, cookies
    return mine[0]


def test_pages_send_a_browser_without_a_session_to_sign_in(browser) -> None:
    response = browser.get("/dashboard/keys")
    assert response.status_code == 303
    assert response.headers["location"] == "/dashboard/sign-in?next=/dashboard/keys"


def test_htmx_requests_without_a_session_get_hx_redirect_not_a_page(browser) -> None:
    response = browser.get("/dashboard/keys", headers={"HX-Request": "true"})
    assert response.status_code == 401
    assert response.headers["hx-redirect"].startswith("/dashboard/sign-in")


def test_bare_dashboard_path_redirects_to_the_slash(browser) -> None:
    response = browser.get("/dashboard")
    assert response.status_code == 307 and response.headers["location"] == "/dashboard/"


def test_sign_in_sets_a_strict_httponly_expiring_cookie_without_the_key(browser, tenant) -> None:
    response = browser.sign_in(tenant.key)
    assert response.headers["location"] == "/dashboard/"
    cookie = session_cookie_header(response)
    flags = [part.strip().lower() for part in cookie.split(";")]
    assert "httponly" in flags and "samesite=strict" in flags
    assert "path=/dashboard" in flags
    assert "max-age=28800" in flags
    assert "secure" not in flags  # loopback: make dev serves plain http
    payload = cookie.split("=", 1)[1].split(".", 1)[0]
    data = json.loads(base64.b64decode(payload))
    assert tenant.key not in cookie
    assert data["kh"] == hash_api_key(tenant.key)
    page = browser.get("/dashboard/")
    assert page.status_code == 200 and page.context["principal"].account_id == tenant.account_id


def test_the_cookie_is_secure_outside_localhost(make_browser, tenant) -> None:
    remote = make_browser(base_url="https://dash.example.com")
    remote.get("/dashboard/sign-in")
    response = remote.post("/dashboard/sign-in", {"api_key": tenant.key, "next": "/dashboard/"})
    assert response.status_code == 303
    assert "secure" in [p.strip().lower() for p in session_cookie_header(response).split(";")]


def test_wrong_key_is_refused_by_the_field(browser) -> None:
    browser.get("/dashboard/sign-in")
    response = browser.post("/dashboard/sign-in", {"api_key": "sk_live_" + "Q" * 43})
    assert response.status_code == 401
    assert response.template.name == "sign_in.html"
    assert "api_key" in response.context["errors"]
    assert browser.get("/dashboard/keys").status_code == 303


def test_sign_in_without_the_csrf_token_is_refused(browser, tenant) -> None:
    browser.get("/dashboard/sign-in")
    response = browser.post("/dashboard/sign-in", {"api_key": tenant.key}, csrf=False)
    assert response.status_code == 403
    assert browser.get("/dashboard/keys").status_code == 303


def test_failed_sign_ins_are_rate_limited_per_client(make_browser, tenant, monkeypatch) -> None:
    browser = make_browser()
    browser.get("/dashboard/sign-in")
    limit = browser.ctx.settings.dashboard_sign_in_attempts
    for _ in range(limit):
        assert browser.post("/dashboard/sign-in", {"api_key": "wrong"}).status_code == 401
    refused = browser.post("/dashboard/sign-in", {"api_key": tenant.key})
    assert refused.status_code == 429
    assert int(refused.headers["retry-after"]) > 0
    assert browser.get("/dashboard/keys").status_code == 303


def test_next_only_leads_inside_the_dashboard(make_browser, tenant) -> None:
    targets = {
        "https://evil.example/": "/dashboard/",
        "//evil.example/dashboard": "/dashboard/",
        "/api/keys": "/dashboard/",
        "/dashboard/numbers": "/dashboard/numbers",
    }
    for target, landing in targets.items():
        browser = make_browser()
        browser.get("/dashboard/sign-in")
        response = browser.post("/dashboard/sign-in", {"api_key": tenant.key, "next": target})
        assert response.headers["location"] == landing, target


def test_sign_out_ends_the_session_and_needs_csrf(signed_in) -> None:
    assert signed_in.post("/dashboard/sign-out", csrf=False).status_code == 403
    assert signed_in.get("/dashboard/keys").status_code == 200
    response = signed_in.post("/dashboard/sign-out")
    assert response.status_code == 303 and response.headers["location"] == "/dashboard/sign-in"
    assert signed_in.get("/dashboard/keys").status_code == 303


def test_revoking_the_key_ends_its_sessions(signed_in, tenant, api_ctx) -> None:
    api_ctx.repo.update(
        ApiKey, (hash_api_key(tenant.key),), {"revoked_at": iso_z(utc_now(), millis=True)}
    )
    assert signed_in.get("/dashboard/keys").status_code == 303


def test_a_post_from_another_origin_is_refused_even_with_the_token(signed_in) -> None:
    response = signed_in.post(
        "/dashboard/keys", {"name": "x"}, headers={"Origin": "https://evil.example"}
    )
    assert response.status_code == 403
    response = signed_in.post(
        "/dashboard/keys", {"name": "x"}, headers={"Sec-Fetch-Site": "cross-site"}
    )
    assert response.status_code == 403
    assert signed_in.post("/dashboard/keys", {"name": "x"}).status_code == 200


def test_pages_carry_the_csp_and_are_not_cached(signed_in) -> None:
    for path in ("/dashboard/sign-in", "/dashboard/", "/dashboard/keys", "/dashboard/nope"):
        response = signed_in.get(path)
        assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY, path
        assert response.headers["cache-control"] == "no-store", path
        assert response.headers["x-frame-options"] == "DENY"
    assert "script-src 'self'" in CONTENT_SECURITY_POLICY
    assert "unsafe" not in CONTENT_SECURITY_POLICY


def test_the_api_is_unchanged_by_the_mount(api_ctx, tenant) -> None:
    """The dashboard is a middleware around the API's routes, not a route of its own."""
    from starlette.routing import Route

    assert all(isinstance(r, Route) for r in create_app(lambda: api_ctx).routes)
