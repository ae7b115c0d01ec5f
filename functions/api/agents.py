"""``/api/agents``: named routes with a stable UUID, addressed by the agent-stream endpoint.

A CPaaS provider streams a call into ``wss://<edge>/api/v1/agent-stream/{agent_uuid}``; the edge
looks the agent up by that UUID, so it is generated once and never changes (PATCH cannot touch it).
An agent may name a telephony config of the same account, whose credentials the edge uses to
check the stream and to hang the call up.

This module also holds the route checks shared by numbers and extensions: a route's URLs pass the
SSRF guard and its ``agent_uuid`` must be an agent of the caller's account (a route may not send
calls to another account's agent).

Edge nodes cache the agents that numbers and extensions route to: an update or delete is followed
by an invalidation to the live nodes (``functions/api/node_notify.py``). A create is not: its
uuid is new, so no node can have cached it (a route may only name an agent that exists).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime

from anyio import to_thread
from pydantic import Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from functions.api.auth import Principal, requires_key
from functions.api.bodies import patch_changes, read_model, read_query
from functions.api.errors import ApiError
from functions.api.node_notify import invalidate_routes
from functions.api.operations import Operation
from functions.api.pagination import ListQuery, page_body, page_model
from functions.api.routing import route
from functions.api.schemas import RequestBody, ResponseBody
from functions.api.scoped import apply_patch, delete_owned, get_owned, list_page, not_found
from functions.api.url_guard import check_urls, route_urls
from functions.context import Context
from shared.dynamo import mapping
from shared.models import Agent, Name, TelephonyConfig
from shared.models import Route as CallRoute
from shared.validation import MediaTargetStr

TAG = "agents"
AGENT_STREAM_PATH = "/api/v1/agent-stream/{agent_uuid}"

_SOCKET_URL_HELP = "ws(s) URL of the bot, 'elevenlabs[&agent_id]' or 'vapi[&assistant_id]'."
_STREAM_AUTH_HELP = (
    "Streams must carry a token (?token=, or a 'token' custom parameter on Twilio): an HMAC "
    "of the agent UUID and an expiry keyed with the account's webhook secret. "
    "'agera stream-token AGENT_UUID' prints one."
)


class AgentCreate(RequestBody):
    name: Name
    socket_url: MediaTargetStr = Field(description=_SOCKET_URL_HELP)
    telephony_config_id: str | None = Field(
        None, max_length=64, description="A telephony config of this account (tel_...)."
    )
    require_token: bool = Field(False, description=_STREAM_AUTH_HELP)


class AgentUpdate(RequestBody):
    name: Name | None = None
    socket_url: MediaTargetStr | None = Field(None, description=_SOCKET_URL_HELP)
    telephony_config_id: str | None = Field(None, max_length=64, description="null detaches.")
    require_token: bool | None = Field(None, description=_STREAM_AUTH_HELP)


class AgentOut(ResponseBody):
    agent_uuid: uuid.UUID
    name: str
    socket_url: str
    telephony_config_id: str | None = None
    require_token: bool = False
    stream_path: str = Field(description="Path of the edge's agent-stream WebSocket endpoint.")
    created_at: datetime
    updated_at: datetime


AgentList = page_model(AgentOut, "AgentList")

OPERATIONS = (
    Operation(
        "POST",
        "/api/agents",
        "Create an agent",
        TAG,
        status=201,
        request=AgentCreate,
        response=AgentOut,
    ),
    Operation("GET", "/api/agents", "List agents", TAG, query=ListQuery, response=AgentList),
    Operation("GET", "/api/agents/{agent_uuid}", "Get an agent", TAG, response=AgentOut),
    Operation(
        "PATCH",
        "/api/agents/{agent_uuid}",
        "Change an agent (its UUID never changes)",
        TAG,
        request=AgentUpdate,
        response=AgentOut,
    ),
    Operation("DELETE", "/api/agents/{agent_uuid}", "Delete an agent", TAG, status=204),
)


def agent_view(agent: Agent) -> AgentOut:
    return AgentOut(
        **agent.model_dump(include=set(AgentOut.model_fields)),
        stream_path=AGENT_STREAM_PATH.format(agent_uuid=agent.agent_uuid),
    )


def require_agent(ctx: Context, account_id: str, agent_uuid: uuid.UUID, field: str) -> None:
    """422 on ``field`` unless the agent exists in this account."""
    agent = ctx.repo.get(Agent, agent_uuid)
    if agent is None or agent.account_id != account_id:
        raise ApiError(
            422, "validation_error", f"{field}: no agent {agent_uuid} in this account", field
        )


def check_route(
    ctx: Context, account_id: str, route_: CallRoute | None, prefix: str = "route"
) -> None:
    """The route's URLs pass the SSRF guard and its agent belongs to the account."""
    if route_ is None:
        return
    check_urls(ctx, route_urls(route_, prefix))
    if route_.agent_uuid is not None:
        require_agent(ctx, account_id, route_.agent_uuid, f"{prefix}.agent_uuid")


def _require_config(ctx: Context, account_id: str, config_id: str | None) -> None:
    if config_id is None:
        return
    if ctx.repo.get(TelephonyConfig, account_id, config_id) is None:
        raise ApiError(
            422,
            "validation_error",
            f"telephony_config_id: no telephony config {config_id} in this account",
            "telephony_config_id",
        )


def _agent_uuid(raw: str) -> uuid.UUID:
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise not_found("agent", raw) from None


def _get(ctx: Context, principal: Principal, raw: str, *, consistent: bool = False) -> Agent:
    agent_uuid = _agent_uuid(raw)
    return get_owned(
        ctx,
        Agent,
        (agent_uuid,),
        principal.account_id,
        kind="agent",
        ident=agent_uuid,
        consistent=consistent,
    )


def create_agent(ctx: Context, principal: Principal, body: AgentCreate) -> AgentOut:
    check_urls(ctx, {"socket_url": body.socket_url})
    _require_config(ctx, principal.account_id, body.telephony_config_id)
    agent = Agent(account_id=principal.account_id, **body.model_dump())
    ctx.repo.put(agent, create_only=True)
    return agent_view(agent)


def update_agent(ctx: Context, principal: Principal, raw: str, body: AgentUpdate) -> AgentOut:
    changes = patch_changes(body, required={"name", "socket_url", "require_token"})
    agent = _get(ctx, principal, raw, consistent=True)
    check_urls(ctx, {"socket_url": body.socket_url})
    if body.telephony_config_id is not None:
        _require_config(ctx, principal.account_id, body.telephony_config_id)
    updated = apply_patch(ctx, agent, changes, kind="agent", ident=agent.agent_uuid)
    invalidate_routes(ctx, agent.account_id, "agent", [str(agent.agent_uuid)])
    return agent_view(updated)


def list_agents(ctx: Context, principal: Principal, query: ListQuery) -> dict[str, object]:
    partition = mapping.account_partition(principal.account_id, mapping.COLLECTIONS[Agent])
    page = list_page(ctx, Agent, partition, query)
    return page_body([agent_view(a) for a in page.items], page.next_cursor)


def delete_agent(ctx: Context, principal: Principal, raw: str) -> None:
    agent_uuid = _agent_uuid(raw)
    delete_owned(ctx, Agent, (agent_uuid,), principal.account_id, kind="agent")
    invalidate_routes(ctx, principal.account_id, "agent", [str(agent_uuid)])


def agent_routes(ctx_provider: Callable[[], Context]) -> list[Route]:
    keyed = requires_key(ctx_provider)

    @keyed
    async def post(request: Request, ctx: Context, principal: Principal) -> JSONResponse:
        body = await read_model(request, AgentCreate)
        out = await to_thread.run_sync(create_agent, ctx, principal, body)
        return JSONResponse(out.model_dump(mode="json"), 201)

    @keyed
    async def get_list(request: Request, ctx: Context, principal: Principal) -> JSONResponse:
        query = read_query(request, ListQuery)
        return JSONResponse(await to_thread.run_sync(list_agents, ctx, principal, query))

    @keyed
    async def get_one(request: Request, ctx: Context, principal: Principal) -> JSONResponse:
        agent = await to_thread.run_sync(_get, ctx, principal, request.path_params["agent_uuid"])
        return JSONResponse(agent_view(agent).model_dump(mode="json"))

    @keyed
    async def patch(request: Request, ctx: Context, principal: Principal) -> JSONResponse:
        body = await read_model(request, AgentUpdate)
        raw = request.path_params["agent_uuid"]
        out = await to_thread.run_sync(update_agent, ctx, principal, raw, body)
        return JSONResponse(out.model_dump(mode="json"))

    @keyed
    async def delete(request: Request, ctx: Context, principal: Principal) -> Response:
        await to_thread.run_sync(delete_agent, ctx, principal, request.path_params["agent_uuid"])
        return Response(status_code=204)

    return [
        route("/api/agents", {"POST": post, "GET": get_list}),
        route("/api/agents/{agent_uuid}", {"GET": get_one, "PATCH": patch, "DELETE": delete}),
    ]
