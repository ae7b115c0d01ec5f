"""A browser's view of the dashboard through Starlette's test client, on the API's own app.

``Browser`` keeps the session cookie like a browser does and reads the CSRF token from what the
last page's template got (``response.context``), so tests submit forms the way a page would.
The base URL is ``http://localhost``: on loopback the session cookie is not Secure (``make dev``
serves plain http); ``secure_browser`` uses another host to see the Secure flag.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from functions.api.app import create_app
from functions.context import Context

# Starlette 1.10's test client prefers the httpx2 package and warns (on import, and again per
# client) when it falls back to httpx, which this project pins; the suite turns warnings into
# errors.
HTTPX_FALLBACK = "ignore:Using `httpx` with `starlette.testclient`"
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from starlette.testclient import TestClient


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/functions/dashboard" in str(item.path).replace("\\", "/"):
            item.add_marker(pytest.mark.filterwarnings(HTTPX_FALLBACK))


class Browser:
    def __init__(self, ctx: Context, base_url: str = "http://localhost") -> None:
        self.ctx = ctx
        self.client = TestClient(create_app(lambda: ctx), base_url=base_url)
        self.csrf = ""

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        response = self.client.get(path, follow_redirects=False, **kwargs)
        self._remember(response)
        return response

    def post(
        self, path: str, data: dict[str, Any] | None = None, *, csrf: bool = True, **kwargs: Any
    ) -> httpx.Response:
        form = dict(data or {})
        if csrf:
            form.setdefault("csrf_token", self.csrf)
        response = self.client.post(path, data=form, follow_redirects=False, **kwargs)
        self._remember(response)
        return response

    def _remember(self, response: httpx.Response) -> None:
        context = getattr(response, "context", None)
        if isinstance(context, dict) and context.get("csrf_token"):
            self.csrf = context["csrf_token"]

    def sign_in(self, key: str) -> httpx.Response:
        self.get("/dashboard/sign-in")
        response = self.post("/dashboard/sign-in", {"api_key": key, "next": "/dashboard/"})
        assert response.status_code == 303, response.text
        self.get("/dashboard/")
        return response


@pytest.fixture
def browser(api_ctx: Context) -> Iterator[Browser]:
    b = Browser(api_ctx)
    yield b
    b.client.close()


@pytest.fixture
def signed_in(browser: Browser, tenant: Any) -> Browser:
    """A browser signed in with ``tenant``'s key."""
    browser.sign_in(tenant.key)
    return browser


@pytest.fixture
def make_browser(api_ctx: Context) -> Iterator[Any]:
    made: list[Browser] = []

    def make(key: str | None = None, base_url: str = "http://localhost") -> Browser:
        b = Browser(api_ctx, base_url)
        made.append(b)
        if key is not None:
            b.sign_in(key)
        return b

    yield make
    for b in made:
        b.client.close()
