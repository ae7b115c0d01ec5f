"""Reads and writes confined to the caller's account; another account's item looks missing.

The issue's rule is that another account's resource answers 404, never 403, so that ids cannot be
probed. Reads check ``account_id`` after the GetItem; writes put the check in the DynamoDB
condition (``account_id = :own``), so a resource cannot change hands between the check and the
write. These functions are synchronous (boto3) and run in a worker thread, one per request.
"""

from __future__ import annotations

from typing import Any, TypeVar

from botocore.exceptions import ClientError

from functions.api.bodies import validate
from functions.api.errors import ApiError
from functions.api.pagination import ListQuery
from functions.context import Context
from shared.clock import utc_now
from shared.dynamo import mapping
from shared.dynamo.mapping import CursorError, Page
from shared.dynamo.repository import ConditionFailed, NotFound, translate
from shared.models import Entity

T = TypeVar("T", bound=Entity)

OWNER_CONDITION = "#own = :own"


def not_found(kind: str, ident: object) -> ApiError:
    return ApiError(404, "not_found", f"{kind} {ident} not found")


def owner_condition(account_id: str) -> dict[str, Any]:
    """Keyword arguments of ``mapping.update_request`` that require the caller's account."""
    return {
        "condition": OWNER_CONDITION,
        "condition_values": {":own": account_id},
        "condition_names": {"#own": "account_id"},
    }


def get_owned(
    ctx: Context,
    model: type[T],
    ids: tuple[Any, ...],
    account_id: str,
    *,
    kind: str,
    ident: object,
    consistent: bool = False,
) -> T:
    """The entity if it exists and belongs to ``account_id``; a 404 otherwise."""
    entity = ctx.repo.get(model, *ids, consistent=consistent)
    if entity is None or getattr(entity, "account_id", None) != account_id:
        raise not_found(kind, ident)
    return entity


def apply_patch(
    ctx: Context, current: T, changes: dict[str, Any], *, kind: str, ident: object
) -> T:
    """Validate ``current`` with ``changes`` applied and write only the changed attributes.

    Writing the changed attributes (not the whole item) lets two PATCHes of different fields both
    land. ``None`` in ``changes`` removes the attribute.
    """
    model = type(current)
    merged = validate(model, {**current.model_dump(), **changes, "updated_at": utc_now()})
    dump = merged.model_dump(mode="json")
    fields = {name: dump.get(name) for name in [*changes, "updated_at"]}
    pk, sk = mapping.spec_for(model).key_of(current)
    item_key = mapping.key_item(pk, sk)
    request = mapping.update_request(
        ctx.settings.table_name,
        item_key,
        ctx.repo.seal_fields(model, item_key, fields),  # secrets are stored sealed
        return_new=True,
        **owner_condition(getattr(current, "account_id", "")),
    )
    try:
        attributes = ctx.repo.execute_update(request)
    except ConditionFailed:
        raise not_found(kind, ident) from None
    return ctx.repo.from_item(model, attributes)


def delete_owned(
    ctx: Context, model: type[Entity], ids: tuple[Any, ...], account_id: str, *, kind: str
) -> None:
    """Delete the entity if it belongs to ``account_id``; a 404 otherwise."""
    request = mapping.delete_request(ctx.settings.table_name, mapping.key(model, *ids))
    request["ConditionExpression"] += f" AND {OWNER_CONDITION}"
    request["ExpressionAttributeNames"] = {"#own": "account_id"}
    request["ExpressionAttributeValues"] = {":own": {"S": account_id}}
    try:
        ctx.dynamodb.delete_item(**request)
    except ClientError as exc:
        error = translate(exc, missing_is_not_found=True)
        if isinstance(error, NotFound):
            raise not_found(kind, ids[-1]) from None
        raise error from None


def list_page(
    ctx: Context,
    model: type[T],
    partition: str,
    query: ListQuery,
    *,
    newest_first: bool = True,
    sort_prefix: str | None = None,
) -> Page[T]:
    """One page of a listing; a cursor from another listing is a 422 on ``cursor``."""
    try:
        return ctx.repo.list(
            partition,
            model,
            limit=query.limit,
            cursor=query.cursor,
            newest_first=newest_first,
            sort_prefix=sort_prefix,
        )
    except CursorError as exc:
        raise ApiError(422, "validation_error", f"cursor: {exc}", "cursor") from None
