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
from dataclasses import dataclass
from typing import Any

from anyio import to_thread
from pydantic import BaseModel
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


@dataclass(frozen=True)
class RoutedKind:
    """What differs between numbers and extensions; the pages are otherwise the same.

    One route builder serves both so a fix to the form flow (refusals, 404s, write-only
    passwords) reaches both. The API functions are the REST API's own.
    """

    plural: str  # listing route name and URL segment: "numbers"
    singular: str  # path parameter and route-name prefix: "number"
    list_: Callable[..., dict[str, Any]]  # the REST API's functions, (ctx, principal, ...)
    get: Callable[..., Any]
    create: Callable[..., Any]
    update: Callable[..., Any]
    delete: Callable[..., None]
    create_model: type[BaseModel]
    update_model: type[BaseModel]
    view: Callable[[Any], BaseModel]
    body: Callable[[Any, bool], dict[str, Any]]  # (form, creating) -> API body
    form_from_view: Callable[[dict[str, Any]], dict[str, str]]
    editing: Callable[[dict[str, Any]], Any]  # what the form template gets as ``editing``
    blank_mode: str  # the route mode a new form starts in
    secret_fields: tuple[str, ...] = ()  # never echoed back into a refused form

    @property
    def form_template(self) -> str:
        return f"{self.singular}_form.html"

    def shown(self, form: Any) -> dict[str, str]:
        values = forms.values(form)
        for name in self.secret_fields:
            values.pop(name, None)
        return values


def routed_routes(kind: RoutedKind, ctx_provider: Callable[[], Context]) -> list[Route]:
    guarded = page(ctx_provider)
    listing_name = kind.plural

    async def load_view(ctx: Context, principal: Principal, raw: str) -> dict[str, Any]:
        item = await to_thread.run_sync(kind.get, ctx, principal, raw)
        return kind.view(item).model_dump(mode="json")

    async def refused(
        request: Request, ctx: Context, principal: Principal, form: Any, exc: ApiError, editing: Any
    ) -> Response:
        return await _form_page(
            request,
            ctx,
            principal,
            kind.form_template,
            kind.shown(form),
            status=exc.status,
            errors=_refused(exc, forms.text(form, "route_mode")),
            editing=editing,
        )

    def back(request: Request) -> Response:
        return RedirectResponse(request.app.url_path_for(listing_name), status_code=303)

    @guarded
    async def listing(request: Request, ctx: Context, principal: Principal) -> Response:
        query = forms.list_query(request)
        result = await to_thread.run_sync(kind.list_, ctx, principal, query)
        context = {kind.plural: _listing(result["items"]), "next_cursor": result["next_cursor"]}
        return render(request, f"{kind.plural}.html", context)

    @guarded
    async def new(request: Request, ctx: Context, principal: Principal) -> Response:
        form = {"route_mode": kind.blank_mode, **dict.fromkeys(route_form.FIELDS, "")}
        return await _form_page(request, ctx, principal, kind.form_template, form, editing=None)

    @guarded
    async def create(request: Request, ctx: Context, principal: Principal) -> Response:
        form = await forms.read(request)
        try:
            body = validate(kind.create_model, kind.body(form, True))
            await to_thread.run_sync(kind.create, ctx, principal, body)
        except ApiError as exc:
            return await refused(request, ctx, principal, form, exc, None)
        return back(request)

    @guarded
    async def edit(request: Request, ctx: Context, principal: Principal) -> Response:
        view = await load_view(ctx, principal, request.path_params[kind.singular])
        form = kind.form_from_view(view)
        return await _form_page(
            request, ctx, principal, kind.form_template, form, editing=kind.editing(view)
        )

    @guarded
    async def update(request: Request, ctx: Context, principal: Principal) -> Response:
        raw = request.path_params[kind.singular]
        form = await forms.read(request)
        try:
            body = validate(kind.update_model, kind.body(form, False))
            await to_thread.run_sync(kind.update, ctx, principal, raw, body)
        except ApiError as exc:
            if exc.status == 404:
                raise
            view = await load_view(ctx, principal, raw)
            return await refused(request, ctx, principal, form, exc, kind.editing(view))
        return back(request)

    @guarded
    async def delete(request: Request, ctx: Context, principal: Principal) -> Response:
        raw = request.path_params[kind.singular]
        await to_thread.run_sync(kind.delete, ctx, principal, raw)
        return back(request)

    one = f"/{kind.plural}/{{{kind.singular}}}"
    return [
        Route(f"/{kind.plural}", listing, methods=["GET"], name=listing_name),
        Route(f"/{kind.plural}", create, methods=["POST"], name=f"{kind.singular}_create"),
        Route(f"/{kind.plural}/new", new, methods=["GET"], name=f"{kind.singular}_new"),
        Route(one, edit, methods=["GET"], name=f"{kind.singular}_edit"),
        Route(one, update, methods=["POST"], name=f"{kind.singular}_update"),
        Route(f"{one}/delete", delete, methods=["POST"], name=f"{kind.singular}_delete"),
    ]


def _number_body(form: Any, creating: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "route": route_form.route_from_form(form),
        "description": forms.optional(form, "description"),
    }
    if creating:
        body["number"] = forms.text(form, "number")
    return body


def _extension_body(form: Any, creating: bool) -> dict[str, Any]:
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


NUMBERS = RoutedKind(
    plural="numbers",
    singular="number",
    list_=num_api.list_numbers,
    get=num_api._get,
    create=num_api.create_number,
    update=num_api.update_number,
    delete=num_api.delete_number,
    create_model=num_api.NumberCreate,
    update_model=num_api.NumberUpdate,
    view=num_api.number_view,
    body=_number_body,
    form_from_view=lambda view: {
        **route_form.form_from_route(view["route"]),
        "description": view["description"] or "",
    },
    editing=lambda view: view["number"],
    blank_mode="bot",
)

EXTENSIONS = RoutedKind(
    plural="extensions",
    singular="extension",
    list_=ext_api.list_extensions,
    get=ext_api._get,
    create=ext_api.create_extension,
    update=ext_api.update_extension,
    delete=ext_api.delete_extension,
    create_model=ext_api.ExtensionCreate,
    update_model=ext_api.ExtensionUpdate,
    view=ext_api.extension_view,
    body=_extension_body,
    form_from_view=lambda view: {
        **route_form.form_from_route(view["route"]),
        "extension": view["extension"],
        "sip_username": view["sip_username"],
        "description": view["description"] or "",
    },
    editing=lambda view: view,
    blank_mode=route_form.NONE_MODE,
    secret_fields=("password",),
)


def number_routes(ctx_provider: Callable[[], Context]) -> list[Route]:
    return routed_routes(NUMBERS, ctx_provider)


def extension_routes(ctx_provider: Callable[[], Context]) -> list[Route]:
    return routed_routes(EXTENSIONS, ctx_provider)
