"""Single-table DynamoDB mapping as pure functions: model ↔ item, key builders, request builders.

Why pure: the Lambda functions talk to DynamoDB through boto3 and the edge through aioboto3. Both take
the request dicts built here, so keys, TTL handling, conditions and cursors exist once and are tested
without any I/O. Items use the low-level attribute-value form (``{"S": ...}``) that both SDK clients
speak.

Layout (one table, ``pk``/``sk``; GSI ``gsi1`` on ``gsi1pk``/``gsi1sk`` lists an account's resources;
``expires_at`` is the TTL attribute, epoch seconds):

=================  ================================  ===============  ===============================
entity             pk                                sk               gsi1pk / gsi1sk
=================  ================================  ===============  ===============================
Account            ACCOUNT#<id>                      ACCOUNT          ACCOUNTS / <created>#<id>
ApiKey             APIKEY#<sha256>                   APIKEY           ACCOUNT#<id>#APIKEYS / <created>#<key_id>
Number             NUMBER#<+e164>                    NUMBER           ACCOUNT#<id>#NUMBERS / <+e164>
Extension          EXT#<account>#<ext>               EXT              ACCOUNT#<id>#EXTENSIONS / <ext>
(SIP user index)   SIPUSER#<sip_username>            SIPUSER          -
Registration       EXT#<account>#<ext>               REG#<contact>    -   (TTL)
Trunk              ACCOUNT#<id>                      TRUNK#<id>       TRUNKS / <account>#<id>
Agent              AGENT#<uuid>                      AGENT            ACCOUNT#<id>#AGENTS / <created>#<uuid>
TelephonyConfig    ACCOUNT#<id>                      TELCO#<id>       ACCOUNT#<id>#TELCOS / <created>#<id>
Call               CALL#<uuid>                       CALL             ACCOUNT#<id>#CALLS / <created ms>#<uuid>
EdgeNode           NODE#<id>                         NODE             NODES / <node_id>   (TTL)
CallSlotCounter    ACCOUNT#<id>                      SLOTS            -
CallSlot           ACCOUNT#<id>                      SLOT#<uuid>      -   (TTL)
CallRateWindow     ACCOUNT#<id>                      CPS#<epoch s>    -   (TTL)
=================  ================================  ===============  ===============================

A second, sparse GSI (``live``, hash ``live_node``, projecting ``created_at`` and ``node_run``) holds
only the calls a node owns that have not ended: ``live_node`` (the owning node's id) is written with
the record when a node creates it (``to_item``) or claims it, and every terminal transition removes
it (``call_transition_request``). The reaper (``functions/workers/reaper.py``) scans that index to
find the calls of dead nodes; it reads only live calls, never the call history.

Trunks are listed across accounts (``TRUNKS``) because an edge node builds its inbound source ACL
from all of them. The SIP user index makes a username unique across accounts; it is written in the
same transaction as its extension. The three call-slot items (an account's live-call count, one
item per call holding a slot, calls started per rate window) are written only by
``shared.call_slots``, in transactions, and are not entities of this module.

Secrets (``EntitySpec.secrets``): the fields the gateway must be able to use and nobody should read
from the table: an account's webhook secret and provider API keys, a trunk's password, a telephony
config's tokens, and an extension's digest HA1 values (password equivalents within the realm). The
repositories store them sealed (``shared.dynamo.sealing``, ``shared.secret_box``); `from_item`
refuses an item whose secrets are still sealed, so no path can mistake a sealed string for a key.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Generic, TypeVar

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer

from shared.clock import iso_z
from shared.dynamo.sealing import item_secrets
from shared.models import (
    Account,
    Agent,
    ApiKey,
    Call,
    CallStatus,
    EdgeNode,
    Entity,
    Extension,
    Number,
    Registration,
    TelephonyConfig,
    Trunk,
)
from shared.secret_box import is_sealed

T = TypeVar("T", bound=Entity)
AttributeValue = dict[str, Any]
Item = dict[str, AttributeValue]

GSI_NAME = "gsi1"
# The sparse index of live calls (see the module docstring) and the bookkeeping attributes it uses.
LIVE_INDEX = "live"
LIVE_NODE_ATTRIBUTE = "live_node"
NODE_RUN_ATTRIBUTE = "node_run"  # the owning node's run id (EdgeNode.run_id) when it took the call
TTL_ATTRIBUTE = "expires_at"
KEY_ATTRIBUTES = ("pk", "sk", "gsi1pk", "gsi1sk")
ENTITY_ATTRIBUTE = "entity"
MAX_PAGE_SIZE = 100

_serializer = TypeSerializer()
_deserializer = TypeDeserializer()


class MappingError(Exception):
    """An item read from the table does not fit its model (corrupt or foreign data)."""


class CursorError(ValueError):
    """A pagination cursor that was not issued for this listing."""


@dataclass(frozen=True, slots=True)
class EntitySpec(Generic[T]):
    """How one model is laid out in the table."""

    kind: str
    model: type[T]
    key: Callable[..., tuple[str, str]]
    key_of: Callable[[T], tuple[str, str]]
    gsi_of: Callable[[T], tuple[str, str]] | None = None
    ttl: bool = False
    secrets: tuple[str, ...] = ()  # dotted paths of the fields stored sealed


def _created(entity: Entity) -> str:
    return iso_z(entity.created_at, millis=True)


def account_partition(account_id: str, collection: str) -> str:
    """The gsi1pk under which an account's resources of one kind are listed."""
    return f"ACCOUNT#{account_id}#{collection}"


SPECS: dict[type[Entity], EntitySpec[Any]] = {}


def _register(spec: EntitySpec[Any]) -> None:
    SPECS[spec.model] = spec


_register(
    EntitySpec(
        "account",
        Account,
        key=lambda account_id: (f"ACCOUNT#{account_id}", "ACCOUNT"),
        key_of=lambda e: (f"ACCOUNT#{e.account_id}", "ACCOUNT"),
        gsi_of=lambda e: ("ACCOUNTS", f"{_created(e)}#{e.account_id}"),
        secrets=("webhook_secret", "elevenlabs.api_key", "vapi.api_key"),
    )
)
_register(
    EntitySpec(
        "apikey",
        ApiKey,
        key=lambda key_hash: (f"APIKEY#{key_hash}", "APIKEY"),
        key_of=lambda e: (f"APIKEY#{e.key_hash}", "APIKEY"),
        gsi_of=lambda e: (account_partition(e.account_id, "APIKEYS"), f"{_created(e)}#{e.key_id}"),
    )
)
_register(
    EntitySpec(
        "number",
        Number,
        key=lambda number: (f"NUMBER#{number}", "NUMBER"),
        key_of=lambda e: (f"NUMBER#{e.number}", "NUMBER"),
        gsi_of=lambda e: (account_partition(e.account_id, "NUMBERS"), e.number),
    )
)
_register(
    EntitySpec(
        "extension",
        Extension,
        key=lambda account_id, ext: (f"EXT#{account_id}#{ext}", "EXT"),
        key_of=lambda e: (f"EXT#{e.account_id}#{e.extension}", "EXT"),
        gsi_of=lambda e: (account_partition(e.account_id, "EXTENSIONS"), e.extension),
        secrets=("ha1_md5", "ha1_sha256"),
    )
)
_register(
    EntitySpec(
        "registration",
        Registration,
        key=lambda account_id, ext, contact: (f"EXT#{account_id}#{ext}", f"REG#{contact}"),
        key_of=lambda e: (f"EXT#{e.account_id}#{e.extension}", f"REG#{e.contact}"),
        ttl=True,
    )
)
_register(
    EntitySpec(
        "trunk",
        Trunk,
        key=lambda account_id, trunk_id: (f"ACCOUNT#{account_id}", f"TRUNK#{trunk_id}"),
        key_of=lambda e: (f"ACCOUNT#{e.account_id}", f"TRUNK#{e.trunk_id}"),
        gsi_of=lambda e: ("TRUNKS", f"{e.account_id}#{e.trunk_id}"),
        secrets=("password",),
    )
)
_register(
    EntitySpec(
        "agent",
        Agent,
        key=lambda agent_uuid: (f"AGENT#{agent_uuid}", "AGENT"),
        key_of=lambda e: (f"AGENT#{e.agent_uuid}", "AGENT"),
        gsi_of=lambda e: (
            account_partition(e.account_id, "AGENTS"),
            f"{_created(e)}#{e.agent_uuid}",
        ),
    )
)
_register(
    EntitySpec(
        "telco",
        TelephonyConfig,
        key=lambda account_id, config_id: (f"ACCOUNT#{account_id}", f"TELCO#{config_id}"),
        key_of=lambda e: (f"ACCOUNT#{e.account_id}", f"TELCO#{e.config_id}"),
        gsi_of=lambda e: (
            account_partition(e.account_id, "TELCOS"),
            f"{_created(e)}#{e.config_id}",
        ),
        secrets=("bearer_token", "auth_token"),
    )
)
_register(
    EntitySpec(
        "call",
        Call,
        key=lambda call_uuid: (f"CALL#{call_uuid}", "CALL"),
        key_of=lambda e: (f"CALL#{e.call_uuid}", "CALL"),
        gsi_of=lambda e: (account_partition(e.account_id, "CALLS"), f"{_created(e)}#{e.call_uuid}"),
    )
)
_register(
    EntitySpec(
        "node",
        EdgeNode,
        key=lambda node_id: (f"NODE#{node_id}", "NODE"),
        key_of=lambda e: (f"NODE#{e.node_id}", "NODE"),
        gsi_of=lambda e: ("NODES", e.node_id),
        ttl=True,
    )
)

COLLECTIONS: dict[type[Entity], str] = {
    ApiKey: "APIKEYS",
    Number: "NUMBERS",
    Extension: "EXTENSIONS",
    Agent: "AGENTS",
    TelephonyConfig: "TELCOS",
    Call: "CALLS",
}


def spec_for(model: type[T]) -> EntitySpec[T]:
    try:
        return SPECS[model]
    except KeyError:
        raise TypeError(f"{model.__name__} is not a stored entity") from None


# --------------------------------------------------------------------------- values


def _to_dynamo_value(value: Any) -> Any:
    """JSON-mode values → what TypeSerializer accepts (floats must be Decimal)."""
    if isinstance(value, float):
        return Decimal(repr(value))
    if isinstance(value, dict):
        return {k: _to_dynamo_value(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_to_dynamo_value(v) for v in value]
    return value


def _from_dynamo_value(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: _from_dynamo_value(v) for k, v in value.items()}
    if isinstance(value, list | set | frozenset):
        return [_from_dynamo_value(v) for v in value]
    return value


def serialize(value: Any) -> AttributeValue:
    return _serializer.serialize(_to_dynamo_value(value))


def key_item(pk: str, sk: str) -> Item:
    return {"pk": {"S": pk}, "sk": {"S": sk}}


def key(model: type[Entity], *ids: Any) -> Item:
    """The primary key of the entity ``model`` named by ``ids`` (see the table above)."""
    return key_item(*spec_for(model).key(*(str(i) for i in ids)))


def sip_user_key(sip_username: str) -> Item:
    """Key of the SIP user index item that makes a digest username unique across accounts."""
    return key_item(f"SIPUSER#{sip_username}", "SIPUSER")


def sip_user_item(sip_username: str, account_id: str, extension: str) -> Item:
    """The SIP user index item: REGISTER's username → the extension it authenticates as."""
    item = sip_user_key(sip_username)
    item[ENTITY_ATTRIBUTE] = {"S": "sipuser"}
    item["account_id"] = {"S": account_id}
    item["extension"] = {"S": extension}
    return item


# --------------------------------------------------------------------------- model <-> item


def to_item(entity: Entity) -> Item:
    """Serialise an entity with its keys, GSI keys, entity tag and TTL."""
    spec = spec_for(type(entity))
    data = entity.model_dump(mode="json", exclude_none=True)
    pk, sk = spec.key_of(entity)
    item: Item = {name: serialize(value) for name, value in data.items()}
    item.update(key_item(pk, sk))
    item[ENTITY_ATTRIBUTE] = {"S": spec.kind}
    if spec.gsi_of is not None:
        gpk, gsk = spec.gsi_of(entity)
        item["gsi1pk"] = {"S": gpk}
        item["gsi1sk"] = {"S": gsk}
    if spec.ttl:
        expires: datetime = entity.expires_at  # type: ignore[attr-defined]
        item[TTL_ATTRIBUTE] = {"N": str(int(expires.timestamp()))}
    if isinstance(entity, Call) and entity.node_id and not entity.status.terminal:
        item[LIVE_NODE_ATTRIBUTE] = {"S": entity.node_id}
    return item


def from_item(model: type[T], item: Mapping[str, AttributeValue]) -> T:
    """Rebuild an entity; raises MappingError when the item is not of that kind or invalid."""
    spec = spec_for(model)
    kind = item.get(ENTITY_ATTRIBUTE, {}).get("S")
    if kind != spec.kind:
        raise MappingError(f"item {item.get('pk')} is a {kind!r}, not a {spec.kind!r}")
    for ref, value in item_secrets(item, spec.secrets):
        if is_sealed(value):
            raise MappingError(f"{ref} is sealed: read it through a repository with a secret box")
    # Only the model's own fields: bookkeeping attributes (applied_events, ...) stay in the table.
    fields = model.model_fields
    data = {
        name: _from_dynamo_value(_deserializer.deserialize(value))
        for name, value in item.items()
        if name in fields
    }
    if spec.ttl:
        data[TTL_ATTRIBUTE] = datetime.fromtimestamp(int(data[TTL_ATTRIBUTE]), UTC)
    try:
        return model.model_validate(data)
    except ValueError as exc:
        raise MappingError(f"item {item.get('pk')} does not fit {model.__name__}: {exc}") from None


# --------------------------------------------------------------------------- requests


def put_request(table: str, entity: Entity, *, create_only: bool = False) -> dict[str, Any]:
    """PutItem; with ``create_only`` it fails (ConditionalCheckFailed) if the key exists."""
    request: dict[str, Any] = {"TableName": table, "Item": to_item(entity)}
    if create_only:
        request["ConditionExpression"] = "attribute_not_exists(pk)"
    return request


def get_request(table: str, item_key: Item, *, consistent: bool = False) -> dict[str, Any]:
    return {"TableName": table, "Key": item_key, "ConsistentRead": consistent}


def delete_request(table: str, item_key: Item, *, must_exist: bool = True) -> dict[str, Any]:
    request: dict[str, Any] = {"TableName": table, "Key": item_key}
    if must_exist:
        request["ConditionExpression"] = "attribute_exists(pk)"
    return request


def transact_request(
    table: str, puts: Iterable[tuple[Entity, bool]] = (), raw: Iterable[dict[str, Any]] = ()
) -> dict[str, Any]:
    """TransactWriteItems for entities written all-or-nothing: ``(entity, create_only)`` pairs."""
    items = []
    for entity, create_only in puts:
        put = put_request(table, entity, create_only=create_only)
        items.append({"Put": put})
    items.extend(raw)
    return {"TransactItems": items}


def update_request(
    table: str,
    item_key: Item,
    set_fields: Mapping[str, Any],
    *,
    remove: Iterable[str] = (),
    condition: str | None = None,
    condition_values: Mapping[str, Any] | None = None,
    condition_names: Mapping[str, str] | None = None,
    return_new: bool = False,
) -> dict[str, Any]:
    """UpdateItem with SET/REMOVE built from plain values (None in set_fields means REMOVE).

    Every attribute name goes through ExpressionAttributeNames, so reserved words (``status``,
    ``duration``, ``name``) need no care from callers. The item must already exist.
    """
    names: dict[str, str] = {}
    values: dict[str, AttributeValue] = {}
    sets: list[str] = []
    removes: list[str] = []
    for index, (name, value) in enumerate(set_fields.items()):
        names[f"#f{index}"] = name
        if value is None:
            removes.append(f"#f{index}")
        else:
            values[f":v{index}"] = serialize(value)
            sets.append(f"#f{index} = :v{index}")
    for index, name in enumerate(remove, start=len(names)):
        names[f"#f{index}"] = name
        removes.append(f"#f{index}")
    parts = []
    if sets:
        parts.append("SET " + ", ".join(sets))
    if removes:
        parts.append("REMOVE " + ", ".join(removes))
    if not parts:
        raise ValueError("update_request needs at least one field")
    expr = "attribute_exists(pk)"
    if condition:
        expr = f"{expr} AND ({condition})"
    names.update(condition_names or {})
    values.update({k: serialize(v) for k, v in (condition_values or {}).items()})
    request: dict[str, Any] = {
        "TableName": table,
        "Key": item_key,
        "UpdateExpression": " ".join(parts),
        "ConditionExpression": expr,
        "ExpressionAttributeNames": names,
    }
    if values:
        request["ExpressionAttributeValues"] = values
    if return_new:
        request["ReturnValues"] = "ALL_NEW"
    return request


def call_transition_request(
    table: str,
    call_uuid: Any,
    status: CallStatus,
    fields: Mapping[str, Any],
    *,
    event_id: str | None = None,
    allow_same: bool = False,
    unclaimed: bool = False,
    keep_live: bool = False,
    now: datetime,
) -> dict[str, Any]:
    """Move a call to ``status`` only if that is forward in its lifecycle.

    Out-of-order and duplicate events are harmless: a record never goes back from ``in-progress``
    to ``ringing``, never leaves a terminal status, and an event id already applied is refused
    (``applied_events`` holds the ids). ``allow_same`` lets an event that changes no status
    (transfer, redirect) apply while the call is live. The caller treats ConditionalCheckFailed as
    "already newer", not as an error.

    ``unclaimed`` applies the change only to a call still ``queued`` that no node has taken
    (no ``node_id``): the API cancelling a queued call races a node claiming its originate command,
    and exactly one of the two conditional writes may win.

    A terminal status takes the call out of the live index (removes ``live_node``), unless
    ``keep_live``: the reaper keeps it there until the end's event is queued, so a reaper that
    dies half-way finds the call again.
    """
    lower = [
        s.value
        for s in CallStatus
        if s.rank < status.rank or (allow_same and s == status and not s.terminal)
    ]
    set_fields = {**fields, "status": status.value, "updated_at": iso_z(now, millis=True)}
    placeholders = {f":s{i}": s for i, s in enumerate(lower)}
    condition = f"#st IN ({', '.join(placeholders)})" if lower else "attribute_not_exists(pk)"
    names = {"#st": "status"} if lower else {}
    if unclaimed:
        condition += " AND #st = :queued AND attribute_not_exists(#node)"
        names.update({"#st": "status", "#node": "node_id"})
        placeholders[":queued"] = CallStatus.QUEUED.value
    if event_id is not None:
        condition += " AND NOT contains(#ae, :eid)"
        names["#ae"] = "applied_events"
        placeholders[":eid"] = event_id
    request = update_request(
        table,
        key(Call, call_uuid),
        set_fields,
        remove=(LIVE_NODE_ATTRIBUTE,) if status.terminal and not keep_live else (),
        condition=condition,
        condition_values=placeholders,
        condition_names=names,
        return_new=True,
    )
    if event_id is not None:
        request["UpdateExpression"] += " ADD #ae :eids"
        request["ExpressionAttributeValues"][":eids"] = {"SS": [event_id]}
    return request


# --------------------------------------------------------------------------- listing


def encode_cursor(last_key: Mapping[str, AttributeValue]) -> str:
    plain = {name: value["S"] for name, value in last_key.items()}
    raw = json.dumps(plain, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, partition: str, sort_prefix: str | None = None) -> Item:
    """Turn a cursor back into ExclusiveStartKey, refusing one minted for another listing."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        plain = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise CursorError("cursor is not one this API issued") from None
    if (
        not isinstance(plain, dict)
        or set(plain) != set(KEY_ATTRIBUTES)
        or not all(isinstance(v, str) for v in plain.values())
        or plain["gsi1pk"] != partition
        or (sort_prefix is not None and not plain["gsi1sk"].startswith(sort_prefix))
    ):
        raise CursorError("cursor is not one this API issued for this listing")
    return {name: {"S": value} for name, value in plain.items()}


def query_partition_request(
    table: str,
    partition: str,
    *,
    limit: int = 50,
    cursor: str | None = None,
    newest_first: bool = True,
    filters: Mapping[str, str] | None = None,
    sort_prefix: str | None = None,
) -> dict[str, Any]:
    """Query gsi1 for one listing (an account's calls, keys, ...), optionally filtered by equality.

    ``sort_prefix`` narrows a shared partition to the items whose gsi1sk starts with it (one
    account's trunks in ``TRUNKS``).

    A filter applies after the read, so a page can come back shorter than ``limit``; the cursor
    still moves on. That is DynamoDB's contract and the API documents it.
    """
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise ValueError(f"limit must be between 1 and {MAX_PAGE_SIZE}")
    request: dict[str, Any] = {
        "TableName": table,
        "IndexName": GSI_NAME,
        "KeyConditionExpression": "gsi1pk = :p",
        "ExpressionAttributeValues": {":p": {"S": partition}},
        "ScanIndexForward": not newest_first,
        "Limit": limit,
    }
    if sort_prefix is not None:
        request["KeyConditionExpression"] += " AND begins_with(gsi1sk, :sp)"
        request["ExpressionAttributeValues"][":sp"] = {"S": sort_prefix}
    if filters:
        names = {}
        conditions = []
        for index, (name, value) in enumerate(filters.items()):
            names[f"#q{index}"] = name
            request["ExpressionAttributeValues"][f":q{index}"] = {"S": value}
            conditions.append(f"#q{index} = :q{index}")
        request["FilterExpression"] = " AND ".join(conditions)
        request["ExpressionAttributeNames"] = names
    if cursor:
        request["ExclusiveStartKey"] = decode_cursor(cursor, partition, sort_prefix)
    return request


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: list[T]
    next_cursor: str | None


def parse_page(model: type[T], response: Mapping[str, Any]) -> Page[T]:
    return page_of([from_item(model, item) for item in response.get("Items", [])], response)


def page_of(items: list[T], response: Mapping[str, Any]) -> Page[T]:
    """A page of ``items`` (already read from ``response``) with the response's cursor."""
    last = response.get("LastEvaluatedKey")
    return Page(items, encode_cursor(last) if last else None)
