"""Repositories over the single table: a sync one (boto3, Lambda) and an async one (aioboto3, edge).

Both are thin: every request comes from ``shared.dynamo.mapping`` and every response goes back
through it, so the two can only differ in ``await``. The client is injected (explicit beats the
environment); building it is the caller's business, which keeps this module free of I/O at
import and lets tests hand in a client pointed at moto.

Secrets (``mapping.EntitySpec.secrets``) are sealed on every write and opened on every read here,
with the box given as ``secrets`` (``shared.secret_box``). Without a box a repository still reads
plaintext secrets, but it refuses to write any secret and to read a sealed one
(`SecretsNotConfigured`): forgetting the box fails loudly, it never stores plaintext or hands a
sealed string out as a key. Callers that build their own requests (``execute_update``, raw
transaction items) seal with `seal_fields` and read with `from_item`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

from botocore.exceptions import ClientError

from shared.dynamo import mapping, sealing
from shared.dynamo.mapping import Item, Page
from shared.models import Entity
from shared.secret_box import (
    AsyncSecretBox,
    SecretBox,
    SecretRef,
    SecretsNotConfigured,
    is_sealed,
)

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


def _no_box(ref: SecretRef, value: str, writing: bool) -> str:
    if writing:
        raise SecretsNotConfigured(
            f"{ref}: this repository has no secret box, so it stores no secret (docs/secrets.md)"
        )
    if is_sealed(value):
        raise SecretsNotConfigured(f"{ref} is sealed and this repository has no secret box")
    return value


def _secret_paths(model: type[Entity]) -> tuple[str, ...]:
    return mapping.spec_for(model).secrets


class Repository:
    """Sync repository (boto3 low-level ``dynamodb`` client)."""

    def __init__(self, client: Any, table_name: str, *, secrets: SecretBox | None = None) -> None:
        self.client = client
        self.table = table_name
        self.secrets = secrets

    def _seal(self, ref: SecretRef, value: str) -> str:
        return _no_box(ref, value, True) if self.secrets is None else self.secrets.seal(value, ref)

    def _open(self, ref: SecretRef, value: str) -> str:
        return _no_box(ref, value, False) if self.secrets is None else self.secrets.open(value, ref)

    def sealed_item(self, model: type[Entity], item: Item) -> Item:
        found = sealing.item_secrets(item, _secret_paths(model))
        if not found:
            return item
        return sealing.with_item_values(item, {r.path: self._seal(r, v) for r, v in found})

    def seal_fields(
        self, model: type[Entity], item_key: Item, fields: dict[str, Any]
    ) -> dict[str, Any]:
        """``fields`` for an UpdateItem of ``item_key`` with its secrets sealed."""
        found = sealing.field_secrets(item_key, fields, _secret_paths(model))
        if not found:
            return fields
        return sealing.with_field_values(fields, {r.path: self._seal(r, v) for r, v in found})

    def from_item(self, model: type[T], item: Item) -> T:
        """``mapping.from_item`` after opening the item's secrets."""
        found = sealing.item_secrets(item, _secret_paths(model))
        if found:
            item = sealing.with_item_values(item, {r.path: self._open(r, v) for r, v in found})
        return mapping.from_item(model, item)

    def _put_request(self, entity: Entity, create_only: bool) -> dict[str, Any]:
        request = mapping.put_request(self.table, entity, create_only=create_only)
        request["Item"] = self.sealed_item(type(entity), request["Item"])
        return request

    def put(self, entity: Entity, *, create_only: bool = False) -> None:
        try:
            self.client.put_item(**self._put_request(entity, create_only))
        except ClientError as exc:
            err = translate(exc)
            raise (AlreadyExists(str(exc)) if isinstance(err, ConditionFailed) else err) from None

    def get(self, model: type[T], *ids: Any, consistent: bool = False) -> T | None:
        request = mapping.get_request(self.table, mapping.key(model, *ids), consistent=consistent)
        item = self.client.get_item(**request).get("Item")
        return self.from_item(model, item) if item else None

    def delete(self, model: type[Entity], *ids: Any) -> None:
        try:
            self.client.delete_item(**mapping.delete_request(self.table, mapping.key(model, *ids)))
        except ClientError as exc:
            raise translate(exc, missing_is_not_found=True) from None

    def update(self, model: type[T], ids: tuple[Any, ...], fields: dict[str, Any]) -> T:
        """Set fields on an existing entity and return it as stored."""
        item_key = mapping.key(model, *ids)
        fields = self.seal_fields(model, item_key, fields)
        request = mapping.update_request(self.table, item_key, fields, return_new=True)
        try:
            response = self.client.update_item(**request)
        except ClientError as exc:
            raise translate(exc, missing_is_not_found=True) from None
        return self.from_item(model, response["Attributes"])

    def transact(
        self, puts: Sequence[tuple[Entity, bool]], raw: Sequence[dict[str, Any]] = ()
    ) -> None:
        """Write several items all-or-nothing; ``(entity, create_only)`` pairs.

        ``raw`` items are written as given: seal their secrets with `seal_fields` first.
        """
        items = [{"Put": self._put_request(entity, create_only)} for entity, create_only in puts]
        try:
            self.client.transact_write_items(
                **mapping.transact_request(self.table, (), [*items, *raw])
            )
        except ClientError as exc:
            raise translate(exc) from None

    def list(self, partition: str, model: type[T], **query: Any) -> Page[T]:
        request = mapping.query_partition_request(self.table, partition, **query)
        response = self.client.query(**request)
        items = [self.from_item(model, item) for item in response.get("Items", [])]
        return mapping.page_of(items, response)

    def execute_update(self, request: dict[str, Any]) -> dict[str, Any]:
        """Run a prepared UpdateItem (e.g. ``call_transition_request``); returns new attributes."""
        try:
            return dict(self.client.update_item(**request).get("Attributes", {}))
        except ClientError as exc:
            raise translate(exc) from None


class AsyncRepository:
    """Async twin of Repository for an aioboto3/aiobotocore ``dynamodb`` client."""

    def __init__(
        self, client: Any, table_name: str, *, secrets: AsyncSecretBox | None = None
    ) -> None:
        self.client = client
        self.table = table_name
        self.secrets = secrets

    async def _seal(self, ref: SecretRef, value: str) -> str:
        if self.secrets is None:
            return _no_box(ref, value, True)
        return await self.secrets.seal(value, ref)

    async def _open(self, ref: SecretRef, value: str) -> str:
        if self.secrets is None:
            return _no_box(ref, value, False)
        return await self.secrets.open(value, ref)

    async def sealed_item(self, model: type[Entity], item: Item) -> Item:
        found = sealing.item_secrets(item, _secret_paths(model))
        if not found:
            return item
        return sealing.with_item_values(item, {r.path: await self._seal(r, v) for r, v in found})

    async def seal_fields(
        self, model: type[Entity], item_key: Item, fields: dict[str, Any]
    ) -> dict[str, Any]:
        found = sealing.field_secrets(item_key, fields, _secret_paths(model))
        if not found:
            return fields
        sealed = {r.path: await self._seal(r, v) for r, v in found}
        return sealing.with_field_values(fields, sealed)

    async def from_item(self, model: type[T], item: Item) -> T:
        found = sealing.item_secrets(item, _secret_paths(model))
        if found:
            opened = {r.path: await self._open(r, v) for r, v in found}
            item = sealing.with_item_values(item, opened)
        return mapping.from_item(model, item)

    async def _put_request(self, entity: Entity, create_only: bool) -> dict[str, Any]:
        request = mapping.put_request(self.table, entity, create_only=create_only)
        request["Item"] = await self.sealed_item(type(entity), request["Item"])
        return request

    async def put(self, entity: Entity, *, create_only: bool = False) -> None:
        request = await self._put_request(entity, create_only)
        try:
            await self.client.put_item(**request)
        except ClientError as exc:
            err = translate(exc)
            raise (AlreadyExists(str(exc)) if isinstance(err, ConditionFailed) else err) from None

    async def get(self, model: type[T], *ids: Any, consistent: bool = False) -> T | None:
        request = mapping.get_request(self.table, mapping.key(model, *ids), consistent=consistent)
        item = (await self.client.get_item(**request)).get("Item")
        return await self.from_item(model, item) if item else None

    async def delete(self, model: type[Entity], *ids: Any) -> None:
        try:
            await self.client.delete_item(
                **mapping.delete_request(self.table, mapping.key(model, *ids))
            )
        except ClientError as exc:
            raise translate(exc, missing_is_not_found=True) from None

    async def update(self, model: type[T], ids: tuple[Any, ...], fields: dict[str, Any]) -> T:
        item_key = mapping.key(model, *ids)
        fields = await self.seal_fields(model, item_key, fields)
        request = mapping.update_request(self.table, item_key, fields, return_new=True)
        try:
            response = await self.client.update_item(**request)
        except ClientError as exc:
            raise translate(exc, missing_is_not_found=True) from None
        return await self.from_item(model, response["Attributes"])

    async def transact(
        self, puts: Sequence[tuple[Entity, bool]], raw: Sequence[dict[str, Any]] = ()
    ) -> None:
        items = [{"Put": await self._put_request(e, create_only)} for e, create_only in puts]
        try:
            await self.client.transact_write_items(
                **mapping.transact_request(self.table, (), [*items, *raw])
            )
        except ClientError as exc:
            raise translate(exc) from None

    async def list(self, partition: str, model: type[T], **query: Any) -> Page[T]:
        request = mapping.query_partition_request(self.table, partition, **query)
        response = await self.client.query(**request)
        items = [await self.from_item(model, item) for item in response.get("Items", [])]
        return mapping.page_of(items, response)

    async def execute_update(self, request: dict[str, Any]) -> dict[str, Any]:
        try:
            return dict((await self.client.update_item(**request)).get("Attributes", {}))
        except ClientError as exc:
            raise translate(exc) from None
