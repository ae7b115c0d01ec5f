"""Templates and the few rules every page shares: what each template gets, and errors as HTML.

Autoescaping is on for every template (``autoescape=True``, not by file extension): account data
(names, descriptions, caller names) is typed by users and shown to other users of the account.
``StrictUndefined`` makes a misspelt variable fail the test that renders it instead of printing
nothing.

Every page gets ``principal`` (who is signed in), ``csrf_token`` (for its forms and, through
``hx-headers`` on ``<body>``, for htmx requests) and ``nav``. A domain error on a form (an
``ApiError`` from the same functions the REST API calls) is shown by the field it names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import NoMatchFound
from starlette.templating import Jinja2Templates

from functions.api.auth import Principal
from functions.api.errors import ApiError
from functions.dashboard.security import csrf_token

HERE = Path(__file__).resolve().parent
TEMPLATES_DIR = HERE / "templates"
STATIC_DIR = HERE / "static"
HTMX_FILE = "htmx-2.0.11.min.js"

# (route name, label, admin only)
NAV = (
    ("overview", "Overview", False),
    ("live_calls", "Live calls", False),
    ("call_history", "Call history", False),
    ("numbers", "Numbers", False),
    ("extensions", "Extensions", False),
    ("trunks", "Trunks", False),
    ("agents", "Agents", False),
    ("keys", "API keys", False),
    ("account", "Settings", False),
    ("webhook_secret", "Webhook secret", False),
    ("fleet", "Fleet", True),
)


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = format_time
    return env


def format_time(value: Any) -> str:
    """ISO-8601 from the API views as ``2026-02-09 14:30:00 UTC``; empty stays empty."""
    if not value:
        return ""
    text = str(value).replace("T", " ")
    text = text.split(".", 1)[0].removesuffix("Z").removesuffix("+00:00")
    return f"{text} UTC"


templates = Jinja2Templates(env=_environment())


def principal_of(request: Request) -> Principal | None:
    principal = request.scope.get("dashboard.principal")
    return principal if isinstance(principal, Principal) else None


def nav_for(request: Request, principal: Principal | None) -> list[dict[str, Any]]:
    if principal is None:
        return []
    here = request.scope.get("route")
    current = getattr(here, "name", None)
    items = []
    for name, label, admin in NAV:
        if admin and not principal.is_admin:
            continue
        try:
            path = request.app.url_path_for(name)
        except NoMatchFound:  # a page this build does not serve
            continue
        items.append({"path": path, "label": label, "current": name == current})
    return items


def render(
    request: Request,
    name: str,
    context: dict[str, Any] | None = None,
    *,
    status: int = 200,
    headers: dict[str, str] | None = None,
) -> Response:
    principal = principal_of(request)
    full = {
        "principal": principal,
        "csrf_token": csrf_token(request),
        "nav": nav_for(request, principal),
        "htmx_file": HTMX_FILE,
        "path_for": request.app.url_path_for,
        "errors": {},
        "form": {},
        "notice": None,
        **(context or {}),
    }
    return templates.TemplateResponse(request, name, full, status_code=status, headers=headers)


def field_errors(exc: ApiError, fields: dict[str, str] | None = None) -> dict[str, str]:
    """``{form field: message}`` for a domain error; ``fields`` maps API fields to form fields.

    An error without a field, or on a field the form does not show, goes under ``""`` and is
    shown above the form.
    """
    api_field = exc.field or ""
    form_field = (fields or {}).get(api_field, api_field)
    message = exc.message
    prefix = f"{api_field}: "
    if api_field and message.startswith(prefix):
        message = message[len(prefix) :]
    return {form_field: message}


def error_page(request: Request, exc: ApiError) -> Response:
    return render(
        request,
        "error.html",
        {"status": exc.status, "message": exc.message},
        status=exc.status,
        headers=exc.headers,
    )
