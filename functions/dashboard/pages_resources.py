"""Trunks (list, create, edit), agents with their stream URLs, and telephony configurations.

Trunk forms become ``TrunkCreate`` / ``TrunkUpdate`` and go to ``functions.api.trunks``: the same
host, credential and inbound-source-width checks as ``/api/trunks``. The password is write-only:
the listing shows ``trunk_view``'s masked form, the edit form an empty input that means "keep".
Agents and telephony configurations are listed through ``list_agents`` and ``list_configs``;
their tokens appear only masked, as the API returns them.

An agent's stream URL is the edge's public stream base (``AGERA_STREAM_PUBLIC_URL``; the local
agent-stream listener when unset) followed by the agent's ``stream_path``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from anyio import to_thread
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from functions.api import trunks as trunk_api
from functions.api.agents import list_agents
from functions.api.auth import Principal
from functions.api.bodies import validate
from functions.api.errors import ApiError
from functions.api.telephony_configs import list_configs
from functions.context import Context
from functions.dashboard import forms
from functions.dashboard.render import field_errors, render
from functions.dashboard.session import page

TRUNK_FIELDS = ("name", "host", "port", "transport", "username", "caller_id_number")


def stream_base(ctx: Context) -> str:
    settings = ctx.settings
    return settings.stream_public_url.rstrip("/") or f"ws://{settings.ws_host}:{settings.ws_port}"


def trunk_body(form: dict[str, str], *, creating: bool) -> dict[str, Any]:
    """The API body of a trunk form. Sources are one per line or comma-separated."""
    body: dict[str, Any] = {
        "name": forms.text(form, "name"),
        "host": forms.text(form, "host"),
        "port": forms.text(form, "port") or "5060",
        "transport": forms.text(form, "transport") or "udp",
        "username": forms.optional(form, "username"),
        "needs_registration": forms.checked(form, "needs_registration"),
        "inbound_sources": [
            s for s in re.split(r"[\s,]+", forms.text(form, "inbound_sources")) if s
        ],
        "caller_id_number": forms.optional(form, "caller_id_number"),
    }
    if password := forms.text(form, "password"):
        body["password"] = password
    elif forms.checked(form, "password_clear") and not creating:
        body["password"] = None
    return body


def _trunk_form(view: dict[str, Any]) -> dict[str, str]:
    form = {name: "" if view.get(name) is None else str(view[name]) for name in TRUNK_FIELDS}
    form["inbound_sources"] = "\n".join(view.get("inbound_sources") or [])
    form["needs_registration"] = "1" if view.get("needs_registration") else ""
    return form


def resource_routes(ctx_provider: Callable[[], Context]) -> list[Route]:
    guarded = page(ctx_provider)

    @guarded
    async def trunks(request: Request, ctx: Context, principal: Principal) -> Response:
        listing = await to_thread.run_sync(
            trunk_api.list_trunks, ctx, principal, forms.list_query(request)
        )
        context = {"trunks": listing["items"], "next_cursor": listing["next_cursor"]}
        return render(request, "trunks.html", context)

    async def trunk_form_page(
        request: Request, form: dict[str, str], editing: dict[str, Any] | None, **extra: Any
    ) -> Response:
        status = int(extra.pop("status", 200))
        return render(
            request, "trunk_form.html", {"form": form, "editing": editing, **extra}, status=status
        )

    @guarded
    async def trunk_new(request: Request, ctx: Context, principal: Principal) -> Response:
        return await trunk_form_page(request, {"port": "5060", "transport": "udp"}, None)

    @guarded
    async def trunk_create(request: Request, ctx: Context, principal: Principal) -> Response:
        form = await forms.read(request)
        try:
            body = validate(trunk_api.TrunkCreate, trunk_body(form, creating=True))
            await to_thread.run_sync(trunk_api.create_trunk, ctx, principal, body)
        except ApiError as exc:
            shown = {k: v for k, v in form.items() if k != "password"}
            return await trunk_form_page(
                request, shown, None, errors=_trunk_errors(exc), status=exc.status
            )
        return RedirectResponse(request.app.url_path_for("trunks"), status_code=303)

    @guarded
    async def trunk_edit(request: Request, ctx: Context, principal: Principal) -> Response:
        trunk = await to_thread.run_sync(
            trunk_api._get, ctx, principal, request.path_params["trunk_id"]
        )
        view = trunk_api.trunk_view(trunk).model_dump(mode="json")
        return await trunk_form_page(request, _trunk_form(view), view)

    @guarded
    async def trunk_update(request: Request, ctx: Context, principal: Principal) -> Response:
        trunk_id = request.path_params["trunk_id"]
        form = await forms.read(request)
        try:
            body = validate(trunk_api.TrunkUpdate, trunk_body(form, creating=False))
            await to_thread.run_sync(trunk_api.update_trunk, ctx, principal, trunk_id, body)
        except ApiError as exc:
            if exc.status == 404:
                raise
            trunk = await to_thread.run_sync(trunk_api._get, ctx, principal, trunk_id)
            view = trunk_api.trunk_view(trunk).model_dump(mode="json")
            shown = {k: v for k, v in form.items() if k != "password"}
            return await trunk_form_page(
                request, shown, view, errors=_trunk_errors(exc), status=exc.status
            )
        return RedirectResponse(request.app.url_path_for("trunks"), status_code=303)

    @guarded
    async def agents(request: Request, ctx: Context, principal: Principal) -> Response:
        query = forms.list_query(request)
        agent_list = await to_thread.run_sync(list_agents, ctx, principal, query)
        configs = await to_thread.run_sync(list_configs, ctx, principal, forms.list_query(request))
        base = stream_base(ctx)
        items = [{**a, "stream_url": base + a["stream_path"]} for a in agent_list["items"]]  # type: ignore[union-attr]
        context = {"agents": items, "configs": configs["items"], "stream_base": base}
        return render(request, "agents.html", context)

    return [
        Route("/trunks", trunks, methods=["GET"], name="trunks"),
        Route("/trunks", trunk_create, methods=["POST"], name="trunk_create"),
        Route("/trunks/new", trunk_new, methods=["GET"], name="trunk_new"),
        Route("/trunks/{trunk_id}", trunk_edit, methods=["GET"], name="trunk_edit"),
        Route("/trunks/{trunk_id}", trunk_update, methods=["POST"], name="trunk_update"),
        Route("/agents", agents, methods=["GET"], name="agents"),
    ]


def _trunk_errors(exc: ApiError) -> dict[str, str]:
    """Errors on ``inbound_sources.3`` belong to the sources field."""
    errors = field_errors(exc)
    return {key.split(".", 1)[0]: value for key, value in errors.items()}
