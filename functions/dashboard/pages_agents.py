"""Agents (with their stream URLs) and telephony configurations: list, create, edit, delete.

Every write goes through ``functions.api.agents`` and ``functions.api.telephony_configs``, the
code behind ``/api/agents`` and ``/api/telephony-configs``: the form becomes the API's pydantic
body (``AgentCreate``, ``TelephonyConfigUpdate`` ...), so the SSRF guard on ``socket_url``, the
"config of this account" check and the provider's required fields hold here too, and a refusal is
shown by the field it names. Another account's agent or config in the URL is the API's 404.

Provider tokens are write-only: listings show the API's masked form, forms never carry a token
back (not even a refused one), and an empty token input on edit means "keep". The API has no
"clear" for a token (each provider needs its own), so the edit form offers none.

An agent's stream URL is the edge's public stream base (``AGERA_STREAM_PUBLIC_URL``; the local
agent-stream listener when unset) followed by the agent's ``stream_path``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from anyio import to_thread
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from functions.api import agents as agent_api
from functions.api import telephony_configs as config_api
from functions.api.auth import Principal
from functions.api.bodies import validate
from functions.api.errors import ApiError
from functions.api.pagination import ListQuery
from functions.context import Context
from functions.dashboard import forms
from functions.dashboard.render import field_errors, render
from functions.dashboard.session import Endpoint, PageEndpoint, page
from shared.dynamo.mapping import MAX_PAGE_SIZE
from shared.models import TelephonyProvider

LIST_SIZE = 50
MAX_CURSOR_LENGTH = 2048
# The write-only half of each provider's pair (the other half names the account and is shown).
TOKEN_FIELDS = frozenset(token for _, token in config_api.PROVIDER_FIELDS.values())
PROVIDERS = {
    TelephonyProvider.CLOUDONIX.value: "Cloudonix",
    TelephonyProvider.TWILIO.value: "Twilio",
}


def stream_base(ctx: Context) -> str:
    settings = ctx.settings
    return settings.stream_public_url.rstrip("/") or f"ws://{settings.ws_host}:{settings.ws_port}"


def _query(request: Request, name: str, limit: int = LIST_SIZE) -> ListQuery:
    """A listing's page from ``?{name}=``: the agents and the configs page separately."""
    cursor = request.query_params.get(name) or None
    if cursor is not None and len(cursor) > MAX_CURSOR_LENGTH:
        cursor = None
    return ListQuery(limit=limit, cursor=cursor)


def _with_stream_url(ctx: Context, agent: dict[str, Any]) -> dict[str, Any]:
    return {**agent, "stream_url": stream_base(ctx) + agent["stream_path"]}


def _no_tokens(form: dict[str, str]) -> dict[str, str]:
    """The form to show back: never a token, whatever happened."""
    return {k: v for k, v in forms.values(form).items() if k not in TOKEN_FIELDS}


# --------------------------------------------------------------------------- agents


def agent_body(form: dict[str, str]) -> dict[str, Any]:
    """The API body of an agent form; "no configuration" is null (on edit: detach)."""
    return {
        "name": forms.text(form, "name"),
        "socket_url": forms.text(form, "socket_url"),
        "telephony_config_id": forms.optional(form, "telephony_config_id"),
        "require_token": forms.checked(form, "require_token"),
    }


def _agent_form(view: dict[str, Any]) -> dict[str, str]:
    return {
        "name": view["name"],
        "socket_url": view["socket_url"],
        "telephony_config_id": view.get("telephony_config_id") or "",
        "require_token": "1" if view.get("require_token") else "",
    }


def _agents_context(ctx: Context, principal: Principal, request: Request) -> dict[str, Any]:
    agents = agent_api.list_agents(ctx, principal, _query(request, "cursor"))
    configs = config_api.list_configs(ctx, principal, _query(request, "config_cursor"))
    return {
        "agents": [_with_stream_url(ctx, a) for a in agents["items"]],  # type: ignore[union-attr]
        "next_cursor": agents["next_cursor"],
        "configs": configs["items"],
        "next_config_cursor": configs["next_cursor"],
        "stream_base": stream_base(ctx),
    }


def _config_choices(ctx: Context, principal: Principal) -> list[dict[str, Any]]:
    """The account's configs an agent may name (the first page of the API's maximum size)."""
    listing = config_api.list_configs(ctx, principal, ListQuery(limit=MAX_PAGE_SIZE))
    return list(listing["items"])  # type: ignore[call-overload]


def agent_routes(ctx_provider: Callable[[], Context]) -> list[Route]:
    guarded = page(ctx_provider)

    async def agents_page(
        request: Request, ctx: Context, principal: Principal, *, status: int = 200, **extra: Any
    ) -> Response:
        context = await to_thread.run_sync(_agents_context, ctx, principal, request)
        return render(request, "agents.html", {**context, **extra}, status=status)

    async def agent_form_page(
        request: Request,
        ctx: Context,
        principal: Principal,
        form: dict[str, str],
        editing: dict[str, Any] | None,
        *,
        status: int = 200,
        errors: dict[str, str] | None = None,
    ) -> Response:
        configs = await to_thread.run_sync(_config_choices, ctx, principal)
        context = {"form": form, "editing": editing, "configs": configs, "errors": errors or {}}
        return render(request, "agent_form.html", context, status=status)

    async def editing_view(ctx: Context, principal: Principal, raw: str) -> dict[str, Any]:
        agent = await to_thread.run_sync(agent_api._get, ctx, principal, raw)
        return _with_stream_url(ctx, agent_api.agent_view(agent).model_dump(mode="json"))

    @guarded
    async def agents(request: Request, ctx: Context, principal: Principal) -> Response:
        return await agents_page(request, ctx, principal)

    @guarded
    async def agent_new(request: Request, ctx: Context, principal: Principal) -> Response:
        return await agent_form_page(request, ctx, principal, {}, None)

    @guarded
    async def agent_create(request: Request, ctx: Context, principal: Principal) -> Response:
        form = await forms.read(request)
        try:
            body = validate(agent_api.AgentCreate, agent_body(form))
            await to_thread.run_sync(agent_api.create_agent, ctx, principal, body)
        except ApiError as exc:
            return await agent_form_page(
                request,
                ctx,
                principal,
                forms.values(form),
                None,
                status=exc.status,
                errors=field_errors(exc),
            )
        return RedirectResponse(request.app.url_path_for("agents"), status_code=303)

    @guarded
    async def agent_edit(request: Request, ctx: Context, principal: Principal) -> Response:
        view = await editing_view(ctx, principal, request.path_params["agent_uuid"])
        return await agent_form_page(request, ctx, principal, _agent_form(view), view)

    @guarded
    async def agent_update(request: Request, ctx: Context, principal: Principal) -> Response:
        raw = request.path_params["agent_uuid"]
        view = await editing_view(ctx, principal, raw)  # 404 before reading the form
        form = await forms.read(request)
        try:
            body = validate(agent_api.AgentUpdate, agent_body(form))
            await to_thread.run_sync(agent_api.update_agent, ctx, principal, raw, body)
        except ApiError as exc:
            if exc.status == 404:
                raise
            return await agent_form_page(
                request,
                ctx,
                principal,
                forms.values(form),
                view,
                status=exc.status,
                errors=field_errors(exc),
            )
        return RedirectResponse(request.app.url_path_for("agents"), status_code=303)

    @guarded
    async def agent_delete(request: Request, ctx: Context, principal: Principal) -> Response:
        view = await editing_view(ctx, principal, request.path_params["agent_uuid"])
        await to_thread.run_sync(agent_api.delete_agent, ctx, principal, view["agent_uuid"])
        return await agents_page(
            request, ctx, principal, notice=f"Agent {view['name']} was deleted."
        )

    return [
        Route("/agents", agents, methods=["GET"], name="agents"),
        Route("/agents", agent_create, methods=["POST"], name="agent_create"),
        Route("/agents/new", agent_new, methods=["GET"], name="agent_new"),
        Route("/agents/{agent_uuid}", agent_edit, methods=["GET"], name="agent_edit"),
        Route("/agents/{agent_uuid}", agent_update, methods=["POST"], name="agent_update"),
        Route("/agents/{agent_uuid}/delete", agent_delete, methods=["POST"], name="agent_delete"),
        *_config_routes(guarded, agents_page),
    ]


# --------------------------------------------------------------------------- configs


def config_body(form: dict[str, str], provider: TelephonyProvider | None) -> dict[str, Any]:
    """The API body of a config form: only the provider's own fields (the other provider's
    inputs are hidden, not emptied). An empty token is left out: "keep" on edit, and on create
    the API's own "required for provider" on that field."""
    if provider is None:
        return {}
    identifier, token = config_api.PROVIDER_FIELDS[provider]
    body: dict[str, Any] = {identifier: forms.optional(form, identifier)}
    if value := forms.text(form, token):
        body[token] = value
    return body


def _provider(form: dict[str, str]) -> TelephonyProvider | None:
    try:
        return TelephonyProvider(forms.text(form, "provider"))
    except ValueError:
        return None


def _config_routes(
    guarded: Callable[[PageEndpoint], Endpoint],
    agents_page: Callable[..., Awaitable[Response]],
) -> list[Route]:
    async def config_form_page(
        request: Request,
        form: dict[str, str],
        editing: dict[str, Any] | None,
        *,
        status: int = 200,
        errors: dict[str, str] | None = None,
    ) -> Response:
        context = {
            "form": _no_tokens(form),
            "editing": editing,
            "providers": PROVIDERS,
            "fields": {p.value: pair for p, pair in config_api.PROVIDER_FIELDS.items()},
            "errors": errors or {},
        }
        return render(request, "telephony_config_form.html", context, status=status)

    async def editing_view(ctx: Context, principal: Principal, config_id: str) -> dict[str, Any]:
        config = await to_thread.run_sync(config_api._get, ctx, principal, config_id)
        return config_api.config_view(config).model_dump(mode="json")

    @guarded
    async def config_new(request: Request, ctx: Context, principal: Principal) -> Response:
        return await config_form_page(
            request, {"provider": TelephonyProvider.CLOUDONIX.value}, None
        )

    @guarded
    async def config_create(request: Request, ctx: Context, principal: Principal) -> Response:
        form = await forms.read(request)
        try:
            data = {"provider": forms.text(form, "provider"), **config_body(form, _provider(form))}
            body = validate(config_api.TelephonyConfigCreate, data)
            await to_thread.run_sync(config_api.create_config, ctx, principal, body)
        except ApiError as exc:
            return await config_form_page(
                request, form, None, status=exc.status, errors=field_errors(exc)
            )
        return RedirectResponse(
            request.app.url_path_for("agents") + "#telephony-configs", status_code=303
        )

    @guarded
    async def config_edit(request: Request, ctx: Context, principal: Principal) -> Response:
        view = await editing_view(ctx, principal, request.path_params["config_id"])
        identifier = config_api.PROVIDER_FIELDS[TelephonyProvider(view["provider"])][0]
        form = {"provider": view["provider"], identifier: view.get(identifier) or ""}
        return await config_form_page(request, form, view)

    @guarded
    async def config_update(request: Request, ctx: Context, principal: Principal) -> Response:
        config_id = request.path_params["config_id"]
        view = await editing_view(ctx, principal, config_id)  # 404 before reading the form
        form = await forms.read(request)
        try:
            data = config_body(form, TelephonyProvider(view["provider"]))
            body = validate(config_api.TelephonyConfigUpdate, data)
            await to_thread.run_sync(config_api.update_config, ctx, principal, config_id, body)
        except ApiError as exc:
            if exc.status == 404:
                raise
            shown = {**form, "provider": view["provider"]}
            return await config_form_page(
                request, shown, view, status=exc.status, errors=field_errors(exc)
            )
        return RedirectResponse(
            request.app.url_path_for("agents") + "#telephony-configs", status_code=303
        )

    @guarded
    async def config_delete(request: Request, ctx: Context, principal: Principal) -> Response:
        config_id = request.path_params["config_id"]
        try:
            await to_thread.run_sync(config_api.delete_config, ctx, principal, config_id)
        except ApiError as exc:
            if exc.status == 404:
                raise
            message = exc.message
            if exc.status == 409:  # an agent uses it: said in the dashboard's terms, not PATCH's
                message = message.split(";", 1)[0] + "; edit that agent: choose no configuration"
            return await agents_page(
                request, ctx, principal, status=exc.status, errors={"": message}
            )
        return await agents_page(
            request, ctx, principal, notice=f"Telephony configuration {config_id} was deleted."
        )

    return [
        Route("/telephony-configs", config_create, methods=["POST"], name="config_create"),
        Route("/telephony-configs/new", config_new, methods=["GET"], name="config_new"),
        Route("/telephony-configs/{config_id}", config_edit, methods=["GET"], name="config_edit"),
        Route(
            "/telephony-configs/{config_id}",
            config_update,
            methods=["POST"],
            name="config_update",
        ),
        Route(
            "/telephony-configs/{config_id}/delete",
            config_delete,
            methods=["POST"],
            name="config_delete",
        ),
    ]
