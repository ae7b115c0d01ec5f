"""Numbers and extensions: list, create, edit, delete, each with the route mode picker.

Each form becomes the REST API's body (``NumberCreate``, ``ExtensionUpdate`` ...) and goes to the
same functions as ``/api/numbers`` and ``/api/extensions``: a number taken by any account is the
same 409, an agent of another account the same 422, a private webhook host the same SSRF refusal.
A refused form is shown again with the message by the field at fault. Passwords are write-only: an
extension's edit form leaves the password input empty, and empty means "keep".

Another account's number or extension, by URL, is the API's 404.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from anyio import to_thread
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from functions.api import extensions as ext_api
from functions.api import numbers as num_api
from functions.api.agents import list_agents
from functions.api.auth import Principal
from functions.api.bodies import validate
from functions.api.errors import ApiError
from functions.api.pagination import ListQuery
from functions.context import Context
from functions.dashboard import forms, route_form
from functions.dashboard.render import render
from functions.dashboard.session import page

AGENT_CHOICES = 100  # agents offered in the picker (one listing page)


def _agents(ctx: Context, principal: Principal) -> list[dict[str, Any]]:
    return list(list_agents(ctx, principal, ListQuery(limit=AGENT_CHOICES))["items"])  # type: ignore[arg-type]


def _refused(exc: ApiError, mode: str) -> dict[str, str]:
    field = route_form.error_field(exc.field, mode)
    message = exc.message
    if exc.field and message.startswith(f"{exc.field}: "):
        message = message[len(exc.field) + 2 :]
    return {field: message}


async def _form_page(
    request: Request,
    ctx: Context,
    principal: Principal,
    template: str,
    form: dict[str, str],
    *,
    status: int = 200,
    errors: dict[str, str] | None = None,
    **extra: Any,
) -> Response:
    agents = await to_thread.run_sync(_agents, ctx, principal)
    context = {
        "form": form,
        "errors": errors or {},
        "agents": agents,
        "modes": route_form.MODES,
        **extra,
    }
    return render(request, template, context, status=status)


def _listing(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**item, "route_label": route_form.describe(item.get("route"))} for item in items]


def number_routes(ctx_provider: Callable[[], Context]) -> list[Route]:
    guarded = page(ctx_provider)

    @guarded
    async def listing(request: Request, ctx: Context, principal: Principal) -> Response:
        query = forms.list_query(request)
        result = await to_thread.run_sync(num_api.list_numbers, ctx, principal, query)
        context = {"numbers": _listing(result["items"]), "next_cursor": result["next_cursor"]}  # type: ignore[arg-type]
        return render(request, "numbers.html", context)

    @guarded
    async def new(request: Request, ctx: Context, principal: Principal) -> Response:
        form = {"route_mode": "bot", **dict.fromkeys(route_form.FIELDS, "")}
        return await _form_page(request, ctx, principal, "number_form.html", form, editing=None)

    @guarded
    async def create(request: Request, ctx: Context, principal: Principal) -> Response:
        form = await forms.read(request)
        try:
            body = validate(
                num_api.NumberCreate,
                {
                    "number": forms.text(form, "number"),
                    "route": route_form.route_from_form(form),
                    "description": forms.optional(form, "description"),
                },
            )
            await to_thread.run_sync(num_api.create_number, ctx, principal, body)
        except ApiError as exc:
            return await _form_page(
                request,
                ctx,
                principal,
                "number_form.html",
                forms.values(form),
                status=exc.status,
                errors=_refused(exc, forms.text(form, "route_mode")),
                editing=None,
            )
        return RedirectResponse(request.app.url_path_for("numbers"), status_code=303)

    @guarded
    async def edit(request: Request, ctx: Context, principal: Principal) -> Response:
        raw = request.path_params["number"]
        number = await to_thread.run_sync(num_api._get, ctx, principal, raw)
        view = num_api.number_view(number).model_dump(mode="json")
        form = {
            **route_form.form_from_route(view["route"]),
            "description": view["description"] or "",
        }
        return await _form_page(
            request, ctx, principal, "number_form.html", form, editing=view["number"]
        )

    @guarded
    async def update(request: Request, ctx: Context, principal: Principal) -> Response:
        raw = request.path_params["number"]
        form = await forms.read(request)
        try:
            body = validate(
                num_api.NumberUpdate,
                {
                    "route": route_form.route_from_form(form),
                    "description": forms.optional(form, "description"),
                },
            )
            await to_thread.run_sync(num_api.update_number, ctx, principal, raw, body)
        except ApiError as exc:
            if exc.status == 404:
                raise
            return await _form_page(
                request,
                ctx,
                principal,
                "number_form.html",
                forms.values(form),
                status=exc.status,
                errors=_refused(exc, forms.text(form, "route_mode")),
                editing=raw,
            )
        return RedirectResponse(request.app.url_path_for("numbers"), status_code=303)

    @guarded
    async def delete(request: Request, ctx: Context, principal: Principal) -> Response:
        raw = request.path_params["number"]
        await to_thread.run_sync(num_api.delete_number, ctx, principal, raw)
        return RedirectResponse(request.app.url_path_for("numbers"), status_code=303)

    return [
        Route("/numbers", listing, methods=["GET"], name="numbers"),
        Route("/numbers", create, methods=["POST"], name="number_create"),
        Route("/numbers/new", new, methods=["GET"], name="number_new"),
        Route("/numbers/{number}", edit, methods=["GET"], name="number_edit"),
        Route("/numbers/{number}", update, methods=["POST"], name="number_update"),
        Route("/numbers/{number}/delete", delete, methods=["POST"], name="number_delete"),
    ]


def _extension_body(form: Any, *, creating: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "sip_username": forms.text(form, "sip_username"),
        "route": route_form.route_from_form(form, optional=True),
        "description": forms.optional(form, "description"),
    }
    password = forms.text(form, "password")
    if creating:
        body["extension"] = forms.text(form, "extension")
        body["password"] = password
    elif password:
        body["password"] = password
    return body


def _without_secrets(form: Any) -> dict[str, str]:
    shown = forms.values(form)
    shown.pop("password", None)
    return shown


def extension_routes(ctx_provider: Callable[[], Context]) -> list[Route]:
    guarded = page(ctx_provider)
    template = "extension_form.html"

    @guarded
    async def listing(request: Request, ctx: Context, principal: Principal) -> Response:
        query = forms.list_query(request)
        result = await to_thread.run_sync(ext_api.list_extensions, ctx, principal, query)
        context = {"extensions": _listing(result["items"]), "next_cursor": result["next_cursor"]}  # type: ignore[arg-type]
        return render(request, "extensions.html", context)

    @guarded
    async def new(request: Request, ctx: Context, principal: Principal) -> Response:
        form = {"route_mode": route_form.NONE_MODE, **dict.fromkeys(route_form.FIELDS, "")}
        return await _form_page(request, ctx, principal, template, form, editing=None)

    @guarded
    async def create(request: Request, ctx: Context, principal: Principal) -> Response:
        form = await forms.read(request)
        try:
            body = validate(ext_api.ExtensionCreate, _extension_body(form, creating=True))
            await to_thread.run_sync(ext_api.create_extension, ctx, principal, body)
        except ApiError as exc:
            return await _form_page(
                request,
                ctx,
                principal,
                template,
                _without_secrets(form),
                status=exc.status,
                errors=_refused(exc, forms.text(form, "route_mode")),
                editing=None,
            )
        return RedirectResponse(request.app.url_path_for("extensions"), status_code=303)

    @guarded
    async def edit(request: Request, ctx: Context, principal: Principal) -> Response:
        raw = request.path_params["extension"]
        extension = await to_thread.run_sync(ext_api._get, ctx, principal, raw)
        view = ext_api.extension_view(extension).model_dump(mode="json")
        form = {
            **route_form.form_from_route(view["route"]),
            "extension": view["extension"],
            "sip_username": view["sip_username"],
            "description": view["description"] or "",
        }
        return await _form_page(request, ctx, principal, template, form, editing=view)

    @guarded
    async def update(request: Request, ctx: Context, principal: Principal) -> Response:
        raw = request.path_params["extension"]
        form = await forms.read(request)
        try:
            body = validate(ext_api.ExtensionUpdate, _extension_body(form, creating=False))
            await to_thread.run_sync(ext_api.update_extension, ctx, principal, raw, body)
        except ApiError as exc:
            if exc.status == 404:
                raise
            extension = await to_thread.run_sync(ext_api._get, ctx, principal, raw)
            view = ext_api.extension_view(extension).model_dump(mode="json")
            return await _form_page(
                request,
                ctx,
                principal,
                template,
                _without_secrets(form),
                status=exc.status,
                errors=_refused(exc, forms.text(form, "route_mode")),
                editing=view,
            )
        return RedirectResponse(request.app.url_path_for("extensions"), status_code=303)

    @guarded
    async def delete(request: Request, ctx: Context, principal: Principal) -> Response:
        raw = request.path_params["extension"]
        await to_thread.run_sync(ext_api.delete_extension, ctx, principal, raw)
        return RedirectResponse(request.app.url_path_for("extensions"), status_code=303)

    return [
        Route("/extensions", listing, methods=["GET"], name="extensions"),
        Route("/extensions", create, methods=["POST"], name="extension_create"),
        Route("/extensions/new", new, methods=["GET"], name="extension_new"),
        Route("/extensions/{extension}", edit, methods=["GET"], name="extension_edit"),
        Route("/extensions/{extension}", update, methods=["POST"], name="extension_update"),
        Route("/extensions/{extension}/delete", delete, methods=["POST"], name="extension_delete"),
    ]
