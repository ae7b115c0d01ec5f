"""``Idempotency-Key`` for ``POST /api/calls``, on Powertools idempotency and the project's table.

Why Powertools and not our own record: its DynamoDB layer already does the hard parts (one
conditional put claims the key, a concurrent duplicate sees INPROGRESS, a finished request's
response is stored and replayed, the payload hash refuses a reused key with another body, a failed
request deletes its claim so a retry runs again). It fits the single table with ``key_attr="pk"``,
``sort_key_attr="sk"`` and the table's TTL attribute as expiry.

How it is fitted to an ASGI app, and why:

- One persistence layer per DynamoDB client, never one per request: constructing it registers a
  user-agent hook on the client, so per-request construction would pile up hooks on a shared client.
- Its state is safe to share between the threads uvicorn runs handlers in: after the first request
  configures it, each request only re-sets ``function_name`` to the same value.
- Records live under one partition, ``IDEMPOTENCY#calls`` (a sort key layout needs a static
  partition value, and per-account layers would mean per-account hooks). Keys are scoped per
  account because the hashed key is ``[account_id, Idempotency-Key]``. One partition takes about
  1000 writes/s, i.e. about 500 keyed originates/s across all accounts before DynamoDB splits it for
  heat; that is far above what the edge fleet dials.
- Lambda's remaining time bounds an INPROGRESS claim (a crashed request frees its key when the
  invocation would have timed out). Mangum passes the Lambda context in the ASGI scope; under
  uvicorn a fixed budget stands in for it.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from functions.api.errors import ApiError
from functions.context import Context
from shared.dynamo import mapping

HEADER = "Idempotency-Key"
PARTITION = "IDEMPOTENCY#calls"
# Stripe keeps keys 24 h; a client retrying a lost response within a day gets the same call.
TTL_SECONDS = 24 * 3600
MAX_KEY_LENGTH = 255
# ApiFunction's timeout (template.yaml): an INPROGRESS claim outliving it is a crashed request.
REQUEST_BUDGET_MS = 10_000
IN_PROGRESS_RETRY_AFTER_SECONDS = 1
_KEY_RE = re.compile(r"^[\x21-\x7e]+$")  # visible ASCII, no spaces


@dataclass(frozen=True, slots=True)
class FixedBudget:
    """Stands in for LambdaContext off Lambda: Powertools asks it for the time left."""

    millis: int = REQUEST_BUDGET_MS

    def get_remaining_time_in_millis(self) -> int:
        return self.millis


def parse_key(value: str | None) -> str | None:
    """The header's key, None when absent; a malformed key is a 422 naming the header."""
    if value is None:
        return None
    if not 1 <= len(value) <= MAX_KEY_LENGTH or not _KEY_RE.match(value):
        raise ApiError(
            422,
            "validation_error",
            f"{HEADER}: must be 1-{MAX_KEY_LENGTH} visible ASCII characters (a UUID is a good key)",
            HEADER,
        )
    return value


class Stores:
    """One Powertools DynamoDB persistence layer per (client, table)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stores: dict[tuple[int, str], tuple[Any, Any]] = {}

    def for_context(self, ctx: Context) -> Any:
        from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer

        client = ctx.dynamodb
        slot = (id(client), ctx.settings.table_name)
        with self._lock:
            entry = self._stores.get(slot)
            if entry is None or entry[0] is not client:
                store = DynamoDBPersistenceLayer(
                    table_name=ctx.settings.table_name,
                    key_attr="pk",
                    sort_key_attr="sk",
                    static_pk_value=PARTITION,
                    expiry_attr=mapping.TTL_ATTRIBUTE,
                    in_progress_expiry_attr="in_progress_expires_at",
                    status_attr="idempotency_status",
                    data_attr="response",
                    validation_key_attr="payload_hash",
                    boto3_client=client,
                )
                entry = (client, store)
                self._stores[slot] = entry
            return entry[1]


_stores = Stores()


def _mark_replayed(response: Any, record: Any) -> Any:
    if isinstance(response, dict):
        return {**response, "replayed": True}
    return response


def run_once(
    ctx: Context,
    function: Callable[..., dict[str, Any]],
    args: tuple[Any, ...],
    *,
    account_id: str,
    key: str,
    body: Any,
    lambda_context: Any,
) -> dict[str, Any]:
    """Run ``function(*args)`` once per (account, key); a replay returns its stored result.

    ``function`` must be a module-level function (its qualified name is part of the stored key)
    returning a JSON-able dict; a replayed result carries ``"replayed": True``. Raises ApiError:
    422 when the key was used with another body, 409 while the first request is still running,
    503 when the records cannot be read or written. The function's own errors pass through (and
    release the key, so a retry runs again).
    """
    from aws_lambda_powertools.utilities.idempotency import (
        IdempotencyConfig,
        idempotent_function,
    )
    from aws_lambda_powertools.utilities.idempotency.exceptions import (
        IdempotencyAlreadyInProgressError,
        IdempotencyInconsistentStateError,
        IdempotencyPersistenceLayerError,
        IdempotencyValidationError,
    )

    config = IdempotencyConfig(
        event_key_jmespath="[account_id, key]",
        payload_validation_jmespath="body",
        raise_on_no_idempotency_key=True,
        expires_after_seconds=TTL_SECONDS,
        lambda_context=lambda_context or FixedBudget(),
        response_hook=_mark_replayed,
    )
    once = idempotent_function(
        function,
        data_keyword_argument="idempotency",
        persistence_store=_stores.for_context(ctx),
        config=config,
    )
    data = {"account_id": account_id, "key": key, "body": body}
    try:
        result: dict[str, Any] = once(*args, idempotency=data)
    except IdempotencyValidationError:
        raise ApiError(
            422,
            "idempotency_key_reused",
            f"{HEADER}: this key was already used with a different request body; "
            "use a new key for a new request",
            HEADER,
        ) from None
    except IdempotencyAlreadyInProgressError:
        raise ApiError(
            409,
            "conflict",
            f"a request with this {HEADER} is still being processed; retry in a moment",
            HEADER,
            headers={"Retry-After": str(IN_PROGRESS_RETRY_AFTER_SECONDS)},
        ) from None
    except (IdempotencyPersistenceLayerError, IdempotencyInconsistentStateError) as exc:
        raise ApiError(
            503,
            "unavailable",
            f"the {HEADER} record could not be read or written ({type(exc).__name__}); "
            "retry the request with the same key",
            headers={"Retry-After": "1"},
        ) from None
    return result
