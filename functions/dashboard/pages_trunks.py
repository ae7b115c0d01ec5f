"""Trunks: list with each one's live registration state, create, edit, delete.

Trunk forms become ``TrunkCreate`` / ``TrunkUpdate`` and go to ``functions.api.trunks``: the same
host, credential and inbound-source-width checks as ``/api/trunks``; delete is ``delete_trunk``,
the code behind ``DELETE /api/trunks/{id}``. The password is write-only: the listing shows
``trunk_view``'s masked form, the edit form an empty input that means "keep".

Registration state lives on the edge nodes, not in the trunk: each node publishes its
registrations in its heartbeat item (``EdgeNode.trunk_registrations``, refreshed every beat). The
listing reads the live nodes' items (a lapsed heartbeat means the node is presumed dead and its
view is ignored) and shows, per registering trunk of this page, what each node reports. Only
entries naming this account are shown, and nodes are named by their SIP address (what the carrier
sees anyway); the node id only to admin keys, who see the fleet page too.
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
from functions.api.auth import Principal
from functions.api.bodies import validate
from functions.api.errors import ApiError
from functions.api.node_notify import live_nodes
from functions.context import Context
from functions.dashboard import forms
from functions.dashboard.render import field_errors, render
from functions.dashboard.session import page
from shared.models import EdgeNode, NodeStatus

TRUNK_FIELDS = ("name", "host", "port", "transport", "username", "caller_id_number")


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


def _trunk_errors(exc: ApiError) -> dict[str, str]:
    """Errors on ``inbound_sources.3`` belong to the sources field."""
    errors = field_errors(exc)
    return {key.split(".", 1)[0]: value for key, value in errors.items()}


def registrations(
    nodes: list[EdgeNode], principal: Principal, trunks: list[dict[str, Any]]
) -> dict[str, list[dict[str, Any]]]:
    """Per registering trunk of ``trunks``, what each live node reports about it (maybe none)."""
    wanted = {t["trunk_id"] for t in trunks if t["needs_registration"]}
    seen: dict[str, list[dict[str, Any]]] = {trunk_id: [] for trunk_id in wanted}
    for node in nodes:
        for trunk_id, state in node.trunk_registrations.items():
            if trunk_id not in wanted or state.account_id != principal.account_id:
                continue
            seen[trunk_id].append(
                {
                    "node": node.sip_address,
                    "node_id": node.node_id if principal.is_admin else None,
                    "draining": node.status is NodeStatus.DRAINING,
                    **state.model_dump(mode="json", exclude={"account_id"}),
                }
            )
    return seen


def _listing(ctx: Context, principal: Principal, request: Request) -> dict[str, Any]:
    listing = trunk_api.list_trunks(ctx, principal, forms.list_query(request))
    items: list[dict[str, Any]] = listing["items"]  # type: ignore[assignment]
    return {
        "trunks": items,
        "next_cursor": listing["next_cursor"],
        "registrations": registrations(
            sorted(live_nodes(ctx), key=lambda node: node.node_id), principal, items
        ),
    }


def trunk_routes(ctx_provider: Callable[[], Context]) -> list[Route]:
    guarded = page(ctx_provider)

    async def trunks_page(
        request: Request, ctx: Context, principal: Principal, *, status: int = 200, **extra: Any
    ) -> Response:
        context = await to_thread.run_sync(_listing, ctx, principal, request)
        return render(request, "trunks.html", {**context, **extra}, status=status)

    @guarded
    async def trunks(request: Request, ctx: Context, principal: Principal) -> Response:
        return await trunks_page(request, ctx, principal)

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
    async def trunk_delete(request: Request, ctx: Context, principal: Principal) -> Response:
        trunk_id = request.path_params["trunk_id"]
        trunk = await to_thread.run_sync(trunk_api._get, ctx, principal, trunk_id)
        await to_thread.run_sync(trunk_api.delete_trunk, ctx, principal, trunk_id)
        return await trunks_page(request, ctx, principal, notice=f"Trunk {trunk.name} was deleted.")

    return [
        Route("/trunks", trunks, methods=["GET"], name="trunks"),
        Route("/trunks", trunk_create, methods=["POST"], name="trunk_create"),
        Route("/trunks/new", trunk_new, methods=["GET"], name="trunk_new"),
        Route("/trunks/{trunk_id}", trunk_edit, methods=["GET"], name="trunk_edit"),
        Route("/trunks/{trunk_id}", trunk_update, methods=["POST"], name="trunk_update"),
        Route("/trunks/{trunk_id}/delete", trunk_delete, methods=["POST"], name="trunk_delete"),
    ]
