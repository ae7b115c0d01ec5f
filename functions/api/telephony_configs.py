"""``/api/telephony-configs``: CPaaS credentials used by agent streams.

When a provider streams a call into an agent, the edge checks the stream against these
credentials and uses them to hang the call up or transfer it at the provider. Each provider needs
its own pair: Cloudonix a domain and a bearer token, Twilio an account SID and an auth token. The
tokens are write-only (masked on read); the domain and the SID identify the account and are shown.

The provider of a config is fixed at creation (PATCH cannot change it): switching providers
changes which fields mean anything, which is a new config. A config used by an agent cannot be
deleted (409 names the agent); detach it from the agent first.

A Cloudonix domain is stored normalised (`shared.telephony.normalise_cloudonix_domain`: lower
case, no trailing dot, a bare name completed to ``<name>.cloudonix.net``) because the edge finds
the config by the normalised domain a stream names; ``Acme`` and ``acme.cloudonix.net`` are one
domain.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any

from anyio import to_thread
from pydantic import Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from functions.api.auth import Principal, requires_key
from functions.api.bodies import patch_changes, read_model, read_query
from functions.api.errors import ApiError
from functions.api.masking import mask
from functions.api.operations import Operation
from functions.api.pagination import ListQuery, page_body, page_model
from functions.api.routing import route
from functions.api.schemas import RequestBody, ResponseBody
from functions.api.scoped import apply_patch, delete_owned, get_owned, list_page, not_found
from functions.context import Context
from shared.dynamo import mapping
from shared.models import Agent, TelephonyConfig, TelephonyProvider
from shared.telephony import normalise_cloudonix_domain

TAG = "telephony-configs"
MAX_ID_LENGTH = 64
# Agent pages scanned for references before a delete (an account's agents, 100 per page).
MAX_AGENT_PAGES = 20

PROVIDER_FIELDS: dict[TelephonyProvider, tuple[str, str]] = {
    TelephonyProvider.CLOUDONIX: ("domain", "bearer_token"),
    TelephonyProvider.TWILIO: ("account_sid", "auth_token"),
}
ALL_FIELDS = frozenset(name for pair in PROVIDER_FIELDS.values() for name in pair)

Domain = Annotated[
    str,
    Field(
        min_length=1,
        max_length=253,
        pattern=r"^[A-Za-z0-9.-]+$",
        description="cloudonix: the Cloudonix domain.",
    ),
]
BearerToken = Annotated[
    str, Field(min_length=1, max_length=512, description="cloudonix: API token (write-only).")
]
AccountSid = Annotated[
    str, Field(pattern=r"^AC[0-9a-fA-F]{32}$", description="twilio: the account SID (AC...).")
]
AuthToken = Annotated[
    str, Field(min_length=1, max_length=256, description="twilio: auth token (write-only).")
]


class TelephonyConfigCreate(RequestBody):
    """Provider credentials: cloudonix needs domain + bearer_token, twilio account_sid + auth_token."""

    provider: TelephonyProvider
    domain: Domain | None = None
    bearer_token: BearerToken | None = None
    account_sid: AccountSid | None = None
    auth_token: AuthToken | None = None


class TelephonyConfigUpdate(RequestBody):
    """New credentials for the config's own provider."""

    domain: Domain | None = None
    bearer_token: BearerToken | None = None
    account_sid: AccountSid | None = None
    auth_token: AuthToken | None = None


class TelephonyConfigOut(ResponseBody):
    config_id: str
    provider: TelephonyProvider
    domain: str | None = None
    bearer_token: str | None = Field(None, description="Masked: only the last four characters.")
    account_sid: str | None = None
    auth_token: str | None = Field(None, description="Masked: only the last four characters.")
    created_at: datetime
    updated_at: datetime


TelephonyConfigList = page_model(TelephonyConfigOut, "TelephonyConfigList")

OPERATIONS = (
    Operation(
        "POST",
        "/api/telephony-configs",
        "Add provider credentials for agent streams",
        TAG,
        status=201,
        request=TelephonyConfigCreate,
        response=TelephonyConfigOut,
    ),
    Operation(
        "GET",
        "/api/telephony-configs",
        "List telephony configs",
        TAG,
        query=ListQuery,
        response=TelephonyConfigList,
    ),
    Operation(
        "GET",
        "/api/telephony-configs/{config_id}",
        "Get a telephony config",
        TAG,
        response=TelephonyConfigOut,
    ),
    Operation(
        "PATCH",
        "/api/telephony-configs/{config_id}",
        "Replace credentials of a telephony config",
        TAG,
        request=TelephonyConfigUpdate,
        response=TelephonyConfigOut,
    ),
    Operation(
        "DELETE",
        "/api/telephony-configs/{config_id}",
        "Delete a telephony config",
        TAG,
        status=204,
    ),
)


def config_view(config: TelephonyConfig) -> TelephonyConfigOut:
    body = config.model_dump(include=set(TelephonyConfigOut.model_fields))
    body["bearer_token"] = mask(config.bearer_token)
    body["auth_token"] = mask(config.auth_token)
    return TelephonyConfigOut.model_validate(body)


def _normalised(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` with its Cloudonix domain, if it has one, in the spelling the edge looks up."""
    domain = values.get("domain")
    if domain is None:
        return values
    return {**values, "domain": normalise_cloudonix_domain(domain)}


def check_provider_fields(provider: TelephonyProvider, values: dict[str, Any]) -> None:
    """Every field of the provider present, none of another provider's; 422 naming the field."""
    wanted = PROVIDER_FIELDS[provider]
    for name in sorted(ALL_FIELDS - set(wanted)):
        if values.get(name) is not None:
            raise ApiError(
                422, "validation_error", f"{name}: not used by provider {provider.value}", name
            )
    for name in wanted:
        if not values.get(name):
            raise ApiError(
                422,
                "validation_error",
                f"{name}: required for provider {provider.value}",
                name,
            )


def _get(
    ctx: Context, principal: Principal, config_id: str, *, consistent: bool = False
) -> TelephonyConfig:
    if len(config_id) > MAX_ID_LENGTH:
        raise not_found("telephony config", config_id)
    return get_owned(
        ctx,
        TelephonyConfig,
        (principal.account_id, config_id),
        principal.account_id,
        kind="telephony config",
        ident=config_id,
        consistent=consistent,
    )


def create_config(
    ctx: Context, principal: Principal, body: TelephonyConfigCreate
) -> TelephonyConfigOut:
    values = _normalised(body.model_dump())
    check_provider_fields(body.provider, values)
    config = TelephonyConfig(account_id=principal.account_id, **values)
    ctx.repo.put(config, create_only=True)
    return config_view(config)


def update_config(
    ctx: Context, principal: Principal, config_id: str, body: TelephonyConfigUpdate
) -> TelephonyConfigOut:
    config = _get(ctx, principal, config_id, consistent=True)
    required = set(PROVIDER_FIELDS[config.provider])
    changes = _normalised(patch_changes(body, required=required))
    check_provider_fields(config.provider, {**config.model_dump(), **changes})
    updated = apply_patch(ctx, config, changes, kind="telephony config", ident=config_id)
    return config_view(updated)


def list_configs(ctx: Context, principal: Principal, query: ListQuery) -> dict[str, object]:
    partition = mapping.account_partition(
        principal.account_id, mapping.COLLECTIONS[TelephonyConfig]
    )
    page = list_page(ctx, TelephonyConfig, partition, query)
    return page_body([config_view(c) for c in page.items], page.next_cursor)


def _agent_using(ctx: Context, account_id: str, config_id: str) -> Agent | None:
    partition = mapping.account_partition(account_id, mapping.COLLECTIONS[Agent])
    cursor: str | None = None
    for _ in range(MAX_AGENT_PAGES):
        page = ctx.repo.list(
            partition,
            Agent,
            limit=mapping.MAX_PAGE_SIZE,
            cursor=cursor,
            filters={"telephony_config_id": config_id},
        )
        if page.items:
            return page.items[0]
        cursor = page.next_cursor
        if cursor is None:
            break
    return None


def delete_config(ctx: Context, principal: Principal, config_id: str) -> None:
    config = _get(ctx, principal, config_id, consistent=True)
    agent = _agent_using(ctx, principal.account_id, config.config_id)
    if agent is not None:
        raise ApiError(
            409,
            "conflict",
            f"telephony config {config_id} is used by agent {agent.agent_uuid}; "
            "detach it first (PATCH the agent with telephony_config_id: null)",
        )
    delete_owned(
        ctx,
        TelephonyConfig,
        (principal.account_id, config_id),
        principal.account_id,
        kind="telephony config",
    )


def telephony_config_routes(ctx_provider: Callable[[], Context]) -> list[Route]:
    keyed = requires_key(ctx_provider)

    @keyed
    async def post(request: Request, ctx: Context, principal: Principal) -> JSONResponse:
        body = await read_model(request, TelephonyConfigCreate)
        out = await to_thread.run_sync(create_config, ctx, principal, body)
        return JSONResponse(out.model_dump(mode="json"), 201)

    @keyed
    async def get_list(request: Request, ctx: Context, principal: Principal) -> JSONResponse:
        query = read_query(request, ListQuery)
        return JSONResponse(await to_thread.run_sync(list_configs, ctx, principal, query))

    @keyed
    async def get_one(request: Request, ctx: Context, principal: Principal) -> JSONResponse:
        config = await to_thread.run_sync(_get, ctx, principal, request.path_params["config_id"])
        return JSONResponse(config_view(config).model_dump(mode="json"))

    @keyed
    async def patch(request: Request, ctx: Context, principal: Principal) -> JSONResponse:
        body = await read_model(request, TelephonyConfigUpdate)
        config_id = request.path_params["config_id"]
        out = await to_thread.run_sync(update_config, ctx, principal, config_id, body)
        return JSONResponse(out.model_dump(mode="json"))

    @keyed
    async def delete(request: Request, ctx: Context, principal: Principal) -> Response:
        config_id = request.path_params["config_id"]
        await to_thread.run_sync(delete_config, ctx, principal, config_id)
        return Response(status_code=204)

    return [
        route("/api/telephony-configs", {"POST": post, "GET": get_list}),
        route(
            "/api/telephony-configs/{config_id}",
            {"GET": get_one, "PATCH": patch, "DELETE": delete},
        ),
    ]
