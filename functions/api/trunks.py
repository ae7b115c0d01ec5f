"""``/api/trunks``: carrier connections, for outbound calls and for accepting inbound ones.

A trunk says where outbound INVITEs go (host, port, transport), which digest credentials answer
the carrier's challenge, which source addresses may send inbound calls (IPs or CIDRs, checked by
the edge before any DID lookup), and whether the gateway must REGISTER with the carrier to receive
calls. The password is kept (the edge must answer challenges with it) but is write-only: reads
show it masked.

Trunk hosts are not passed through the SSRF guard: SIP peers on private addresses (a PBX over a
VPN) are normal, and the edge only speaks SIP/RTP to them, not HTTP.

Inbound sources are limited in width (`check_source_widths`): a source skips digest at the edge
and is never rate limited or banned there, so an account key may name at most a /16 (IPv4) or a
/48 (IPv6), which covers any carrier's published ranges; only an admin key may go wider. A
source reaches only its own account's numbers either way (the edge checks ownership per call).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any

from anyio import to_thread
from pydantic import AfterValidator, BeforeValidator, Field
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
from shared.models import Cidr, Name, Transport, Trunk
from shared.validation import PhoneNumber

TAG = "trunks"
TRUNKS_PARTITION = "TRUNKS"
MAX_HOST_LENGTH = 253
MAX_INBOUND_SOURCES = 100
MAX_ID_LENGTH = 64
# The widest inbound source an account key may name, per IP version (prefix length).
WIDEST_SOURCE_PREFIX = {4: 16, 6: 48}
_V4_MAPPED = ipaddress.ip_network("::ffff:0:0/96")
# RFC 1123 §2.1 host names: letters, digits and hyphens, labels of 1-63, no hyphen at the ends.
_LABEL_RE = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")


def _check_host(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value.strip("[]")))
    except ValueError:
        pass
    labels = value.rstrip(".").split(".")
    if len(value) > MAX_HOST_LENGTH or not all(_LABEL_RE.match(label) for label in labels):
        raise ValueError("must be a host name (e.g. sip.carrier.example) or an IP address")
    return value.rstrip(".").lower()


def _strip(value: object) -> object:
    return value.strip() if isinstance(value, str) else value


Host = Annotated[str, BeforeValidator(_strip), AfterValidator(_check_host)]
Port = Annotated[int, Field(ge=1, le=65535)]
Username = Annotated[str, Field(min_length=1, max_length=128)]
Password = Annotated[str, Field(min_length=1, max_length=256, description="Write-only.")]
Sources = Annotated[
    list[Cidr],
    Field(
        max_length=MAX_INBOUND_SOURCES,
        description="IP addresses or CIDRs allowed to send inbound calls on this trunk, to this "
        "account's numbers only. At most /16 (IPv4) or /48 (IPv6) unless an admin key sets it.",
    ),
]


class TrunkCreate(RequestBody):
    name: Name
    host: Host
    port: Port = 5060
    transport: Transport = Transport.UDP
    username: Username | None = Field(None, description="Digest username for the carrier.")
    password: Password | None = None
    needs_registration: bool = Field(False, description="REGISTER with the trunk to get calls.")
    inbound_sources: Sources = Field(default_factory=list)
    caller_id_number: PhoneNumber | None = Field(
        None, description="Caller ID used on outbound calls when the request gives none."
    )


class TrunkUpdate(RequestBody):
    name: Name | None = None
    host: Host | None = None
    port: Port | None = None
    transport: Transport | None = None
    username: Username | None = None
    password: Password | None = None
    needs_registration: bool | None = None
    inbound_sources: Sources | None = None
    caller_id_number: PhoneNumber | None = None


class TrunkOut(ResponseBody):
    trunk_id: str
    name: str
    host: str
    port: int
    transport: Transport
    username: str | None = None
    password: str | None = Field(None, description="Masked: only the last four characters.")
    needs_registration: bool
    inbound_sources: list[str]
    caller_id_number: str | None = None
    created_at: datetime
    updated_at: datetime


TrunkList = page_model(TrunkOut, "TrunkList")

OPERATIONS = (
    Operation(
        "POST",
        "/api/trunks",
        "Create a trunk",
        TAG,
        status=201,
        request=TrunkCreate,
        response=TrunkOut,
    ),
    Operation("GET", "/api/trunks", "List trunks", TAG, query=ListQuery, response=TrunkList),
    Operation("GET", "/api/trunks/{trunk_id}", "Get a trunk", TAG, response=TrunkOut),
    Operation(
        "PATCH",
        "/api/trunks/{trunk_id}",
        "Change a trunk",
        TAG,
        request=TrunkUpdate,
        response=TrunkOut,
    ),
    Operation("DELETE", "/api/trunks/{trunk_id}", "Delete a trunk", TAG, status=204),
)

REQUIRED_ON_PATCH = frozenset({"name", "host", "port", "transport", "needs_registration"})


def trunk_view(trunk: Trunk) -> TrunkOut:
    body = trunk.model_dump(include=set(TrunkOut.model_fields))
    body["password"] = mask(trunk.password)
    return TrunkOut.model_validate(body)


def check_credentials(values: dict[str, Any]) -> None:
    """Digest needs both halves, and registering needs credentials."""
    if values.get("password") and not values.get("username"):
        raise ApiError(422, "validation_error", "username: required with a password", "username")
    if values.get("username") and not values.get("password"):
        raise ApiError(422, "validation_error", "password: required with a username", "password")
    if values.get("needs_registration") and not values.get("username"):
        raise ApiError(
            422,
            "validation_error",
            "username: needs_registration needs username and password",
            "username",
        )


def _source_width_error(cidr: str) -> str | None:
    """Why ``cidr`` is too wide for an account key, or None. An IPv4-mapped IPv6 range
    (``::ffff:0:0/96``) is judged as the IPv4 range it stands for."""
    network = ipaddress.ip_network(cidr, strict=False)
    version, length = network.version, network.prefixlen
    if isinstance(network, ipaddress.IPv6Network) and network.subnet_of(_V4_MAPPED):
        version, length = 4, length - 96
    if length == 0:
        return f"{cidr} matches every address"
    widest = WIDEST_SOURCE_PREFIX[version]
    if length < widest:
        return f"{cidr} is wider than /{widest} (IPv{version})"
    return None


def check_source_widths(sources: list[str] | None, principal: Principal) -> None:
    """422 naming ``inbound_sources[i]`` for a source wider than an account key may set.

    Admin keys may set wider ranges (an operator vouching for a carrier's big block).
    """
    if not sources or principal.is_admin:
        return
    for index, cidr in enumerate(sources):
        error = _source_width_error(cidr)
        if error is not None:
            raise ApiError(
                422,
                "validation_error",
                f"inbound_sources[{index}]: {error}; name the carrier's own ranges "
                "(at most /16 for IPv4, /48 for IPv6), or ask an admin",
                f"inbound_sources.{index}",
            )


def _get(ctx: Context, principal: Principal, trunk_id: str, *, consistent: bool = False) -> Trunk:
    if len(trunk_id) > MAX_ID_LENGTH:
        raise not_found("trunk", trunk_id)
    return get_owned(
        ctx,
        Trunk,
        (principal.account_id, trunk_id),
        principal.account_id,
        kind="trunk",
        ident=trunk_id,
        consistent=consistent,
    )


def create_trunk(ctx: Context, principal: Principal, body: TrunkCreate) -> TrunkOut:
    check_credentials(body.model_dump())
    check_source_widths(body.inbound_sources, principal)
    trunk = Trunk(account_id=principal.account_id, **body.model_dump())
    ctx.repo.put(trunk, create_only=True)
    return trunk_view(trunk)


def update_trunk(ctx: Context, principal: Principal, trunk_id: str, body: TrunkUpdate) -> TrunkOut:
    changes = patch_changes(body, required=REQUIRED_ON_PATCH)
    check_source_widths(changes.get("inbound_sources"), principal)
    trunk = _get(ctx, principal, trunk_id, consistent=True)
    check_credentials({**trunk.model_dump(), **changes})
    return trunk_view(apply_patch(ctx, trunk, changes, kind="trunk", ident=trunk_id))


def list_trunks(ctx: Context, principal: Principal, query: ListQuery) -> dict[str, object]:
    # Trunks live in one gateway-wide listing (the edge builds its source ACL from it), sorted
    # by "<account>#<trunk>": the account's own are a prefix of it.
    page = list_page(
        ctx,
        Trunk,
        TRUNKS_PARTITION,
        query,
        newest_first=False,
        sort_prefix=f"{principal.account_id}#",
    )
    return page_body([trunk_view(t) for t in page.items], page.next_cursor)


def delete_trunk(ctx: Context, principal: Principal, trunk_id: str) -> None:
    if len(trunk_id) > MAX_ID_LENGTH:
        raise not_found("trunk", trunk_id)
    delete_owned(ctx, Trunk, (principal.account_id, trunk_id), principal.account_id, kind="trunk")


def trunk_routes(ctx_provider: Callable[[], Context]) -> list[Route]:
    keyed = requires_key(ctx_provider)

    @keyed
    async def post(request: Request, ctx: Context, principal: Principal) -> JSONResponse:
        body = await read_model(request, TrunkCreate)
        out = await to_thread.run_sync(create_trunk, ctx, principal, body)
        return JSONResponse(out.model_dump(mode="json"), 201)

    @keyed
    async def get_list(request: Request, ctx: Context, principal: Principal) -> JSONResponse:
        query = read_query(request, ListQuery)
        return JSONResponse(await to_thread.run_sync(list_trunks, ctx, principal, query))

    @keyed
    async def get_one(request: Request, ctx: Context, principal: Principal) -> JSONResponse:
        trunk = await to_thread.run_sync(_get, ctx, principal, request.path_params["trunk_id"])
        return JSONResponse(trunk_view(trunk).model_dump(mode="json"))

    @keyed
    async def patch(request: Request, ctx: Context, principal: Principal) -> JSONResponse:
        body = await read_model(request, TrunkUpdate)
        trunk_id = request.path_params["trunk_id"]
        out = await to_thread.run_sync(update_trunk, ctx, principal, trunk_id, body)
        return JSONResponse(out.model_dump(mode="json"))

    @keyed
    async def delete(request: Request, ctx: Context, principal: Principal) -> Response:
        await to_thread.run_sync(delete_trunk, ctx, principal, request.path_params["trunk_id"])
        return Response(status_code=204)

    return [
        route("/api/trunks", {"POST": post, "GET": get_list}),
        route("/api/trunks/{trunk_id}", {"GET": get_one, "PATCH": patch, "DELETE": delete}),
    ]
