"""Repositories over the single table: a sync one (boto3, Lambda) and an async one (aioboto3, edge).

Both are thin: every request comes from ``shared.dynamo.mapping`` and every response goes back
through it, so the two can only differ in ``await``. The client is injected (explicit beats the
environment); building it is the caller's business, which keeps this module free of I/O at
import and lets tests hand in a client pointed at moto.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

from botocore.exceptions import ClientError

from shared.dynamo import mapping
from shared.dynamo.mapping import Page
from shared.models import Entity

T = TypeVar("T", bound=Entity)


class RepositoryError(Exception):
    """Base of the errors a repository raises for expected outcomes."""


class AlreadyExists(RepositoryError):
    """A create-only write found the key taken."""


class NotFound(RepositoryError):
    """The item to change or delete does not exist."""


class ConditionFailed(RepositoryError):
    """A conditional write was refused (a stale or duplicate state change)."""


class TransactionConflict(RepositoryError):
    """A transaction was cancelled; ``reasons`` has one code per item (``None`` when fine)."""

    def __init__(self, reasons: list[str | None]) -> None:
        super().__init__(f"transaction cancelled: {reasons}")
        self.reasons = reasons


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _reasons(exc: ClientError) -> list[str | None]:
    reasons = exc.response.get("CancellationReasons") or []
    out: list[str | None] = []
    for reason in reasons:
        code = reason.get("Code")
        out.append(None if code in (None, "None") else code)
    return out


def translate(exc: ClientError, *, missing_is_not_found: bool = False) -> Exception:
    """Map the SDK's error codes to this module's errors; anything else is re-raised as is."""
    code = _code(exc)
    if code == "ConditionalCheckFailedException":
        return NotFound(str(exc)) if missing_is_not_found else ConditionFailed(str(exc))
    if code == "TransactionCanceledException":
        reasons = _reasons(exc)
        if "ConditionalCheckFailed" in reasons:
            return TransactionConflict(reasons)
    return exc


class Repository:
    """Sync repository (boto3 low-level ``dynamodb`` client)."""

    def __init__(self, client: Any, table_name: str) -> None:
        self.client = client
        self.table = table_name

    def put(self, entity: Entity, *, create_only: bool = False) -> None:
        try:
            self.client.put_item(**mapping.put_request(self.table, entity, create_only=create_only))
        except ClientError as exc:
            err = translate(exc)
            raise (AlreadyExists(str(exc)) if isinstance(err, ConditionFailed) else err) from None

    def get(self, model: type[T], *ids: Any, consistent: bool = False) -> T | None:
        request = mapping.get_request(self.table, mapping.key(model, *ids), consistent=consistent)
        item = self.client.get_item(**request).get("Item")
        return mapping.from_item(model, item) if item else None

    def delete(self, model: type[Entity], *ids: Any) -> None:
        try:
            self.client.delete_item(**mapping.delete_request(self.table, mapping.key(model, *ids)))
        except ClientError as exc:
            raise translate(exc, missing_is_not_found=True) from None

    def update(self, model: type[T], ids: tuple[Any, ...], fields: dict[str, Any]) -> T:
        """Set fields on an existing entity and return it as stored."""
        request = mapping.update_request(
            self.table, mapping.key(model, *ids), fields, return_new=True
        )
        try:
            response = self.client.update_item(**request)
        except ClientError as exc:
            raise translate(exc, missing_is_not_found=True) from None
        return mapping.from_item(model, response["Attributes"])

    def transact(
        self, puts: Sequence[tuple[Entity, bool]], raw: Sequence[dict[str, Any]] = ()
    ) -> None:
        """Write several items all-or-nothing; ``(entity, create_only)`` pairs."""
        try:
            self.client.transact_write_items(**mapping.transact_request(self.table, puts, raw))
        except ClientError as exc:
            raise translate(exc) from None

    def list(self, partition: str, model: type[T], **query: Any) -> Page[T]:
        request = mapping.query_partition_request(self.table, partition, **query)
        return mapping.parse_page(model, self.client.query(**request))

    def execute_update(self, request: dict[str, Any]) -> dict[str, Any]:
        """Run a prepared UpdateItem (e.g. ``call_transition_request``); returns new attributes."""
        try:
            return dict(self.client.update_item(**request).get("Attributes", {}))
        except ClientError as exc:
            raise translate(exc) from None


class AsyncRepository:
    """Async twin of Repository for an aioboto3/aiobotocore ``dynamodb`` client."""

    def __init__(self, client: Any, table_name: str) -> None:
        self.client = client
        self.table = table_name

    async def put(self, entity: Entity, *, create_only: bool = False) -> None:
        try:
            await self.client.put_item(
                **mapping.put_request(self.table, entity, create_only=create_only)
            )
        except ClientError as exc:
            err = translate(exc)
            raise (AlreadyExists(str(exc)) if isinstance(err, ConditionFailed) else err) from None

    async def get(self, model: type[T], *ids: Any, consistent: bool = False) -> T | None:
        request = mapping.get_request(self.table, mapping.key(model, *ids), consistent=consistent)
        item = (await self.client.get_item(**request)).get("Item")
        return mapping.from_item(model, item) if item else None

    async def delete(self, model: type[Entity], *ids: Any) -> None:
        try:
            await self.client.delete_item(
                **mapping.delete_request(self.table, mapping.key(model, *ids))
            )
        except ClientError as exc:
            raise translate(exc, missing_is_not_found=True) from None

    async def update(self, model: type[T], ids: tuple[Any, ...], fields: dict[str, Any]) -> T:
        request = mapping.update_request(
            self.table, mapping.key(model, *ids), fields, return_new=True
        )
        try:
            response = await self.client.update_item(**request)
        except ClientError as exc:
            raise translate(exc, missing_is_not_found=True) from None
        return mapping.from_item(model, response["Attributes"])

    async def transact(
        self, puts: Sequence[tuple[Entity, bool]], raw: Sequence[dict[str, Any]] = ()
    ) -> None:
        try:
            await self.client.transact_write_items(
                **mapping.transact_request(self.table, puts, raw)
            )
        except ClientError as exc:
            raise translate(exc) from None

    async def list(self, partition: str, model: type[T], **query: Any) -> Page[T]:
        request = mapping.query_partition_request(self.table, partition, **query)
        return mapping.parse_page(model, await self.client.query(**request))

    async def execute_update(self, request: dict[str, Any]) -> dict[str, Any]:
        try:
            return dict((await self.client.update_item(**request)).get("Attributes", {}))
        except ClientError as exc:
            raise translate(exc) from None
