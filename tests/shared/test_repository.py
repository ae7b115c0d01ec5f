"""Both repositories against moto's server, on the table provisioned from template.yaml."""

from __future__ import annotations

import uuid

import aioboto3
import pytest

from shared.dynamo import mapping
from shared.dynamo.mapping import account_partition
from shared.dynamo.repository import (
    AlreadyExists,
    AsyncRepository,
    ConditionFailed,
    NotFound,
    Repository,
    TransactionConflict,
)
from shared.models import Account, ApiKey, Call, CallStatus, Direction, Number, Route
from shared.provisioning import create_account_with_key, new_account, new_key_record


def a_call(account_id: str, **fields) -> Call:
    return Call(
        account_id=account_id,
        direction=Direction.OUTBOUND,
        from_number="+15005550006",
        to_number="+15005550001",
        **fields,
    )


def test_put_get_delete(repo: Repository) -> None:
    account = new_account("Acme")
    repo.put(account, create_only=True)
    assert repo.get(Account, account.account_id) == account
    with pytest.raises(AlreadyExists):
        repo.put(account, create_only=True)
    repo.delete(Account, account.account_id)
    assert repo.get(Account, account.account_id) is None
    with pytest.raises(NotFound):
        repo.delete(Account, account.account_id)


def test_account_and_key_are_written_together_or_not_at_all(repo: Repository) -> None:
    account = new_account("Acme")
    issued = create_account_with_key(repo, account, "first")
    assert repo.get(ApiKey, issued.record.key_hash).account_id == account.account_id
    # Same account again with a new key: the transaction fails and the new key is not written.
    again = new_key_record(account.account_id, "second")
    with pytest.raises(TransactionConflict) as info:
        repo.transact([(account, True), (again.record, True)])
    assert info.value.reasons == ["ConditionalCheckFailed", None]
    assert repo.get(ApiKey, again.record.key_hash) is None


def test_update_returns_the_stored_entity(repo: Repository) -> None:
    account = new_account("Acme")
    repo.put(account)
    updated = repo.update(Account, (account.account_id,), {"webhook_url": "https://x.example/h"})
    assert updated.webhook_url == "https://x.example/h"
    with pytest.raises(NotFound):
        repo.update(Account, ("acc_missing",), {"name": "x"})


def test_listing_is_newest_first_with_cursor(repo: Repository) -> None:
    account_id = f"acc_{uuid.uuid4().hex[:8]}"
    from datetime import timedelta

    from shared.clock import utc_now

    start = utc_now()
    calls = [a_call(account_id, created_at=start + timedelta(seconds=i)) for i in range(5)]
    for call in calls:
        repo.put(call)
    partition = account_partition(account_id, "CALLS")
    first = repo.list(partition, Call, limit=3)
    assert [c.call_uuid for c in first.items] == [c.call_uuid for c in reversed(calls)][:3]
    assert first.next_cursor
    second = repo.list(partition, Call, limit=3, cursor=first.next_cursor)
    assert [c.call_uuid for c in second.items] == [c.call_uuid for c in reversed(calls)][3:]
    assert second.next_cursor is None
    other = account_partition("acc_other", "CALLS")
    with pytest.raises(mapping.CursorError):
        repo.list(other, Call, cursor=first.next_cursor)


def test_listing_filter(repo: Repository) -> None:
    account_id = f"acc_{uuid.uuid4().hex[:8]}"
    repo.put(a_call(account_id, status=CallStatus.COMPLETED))
    repo.put(a_call(account_id))
    page = repo.list(account_partition(account_id, "CALLS"), Call, filters={"status": "completed"})
    assert [c.status for c in page.items] == [CallStatus.COMPLETED]


def test_transitions_move_forward_once(repo: Repository) -> None:
    from shared.clock import utc_now

    call = a_call("acc_t")
    repo.put(call)
    table = repo.table

    def go(status: CallStatus, event_id: str) -> dict:
        return repo.execute_update(
            mapping.call_transition_request(
                table, call.call_uuid, status, {}, event_id=event_id, now=utc_now()
            )
        )

    assert go(CallStatus.RINGING, "e1")["status"] == {"S": "ringing"}
    assert go(CallStatus.COMPLETED, "e3")["status"] == {"S": "completed"}
    with pytest.raises(ConditionFailed):  # late answered after completed
        go(CallStatus.IN_PROGRESS, "e2")
    with pytest.raises(ConditionFailed):  # duplicate
        go(CallStatus.COMPLETED, "e3")
    assert repo.get(Call, call.call_uuid, consistent=True).status is CallStatus.COMPLETED


@pytest.mark.anyio
async def test_async_repository_shares_the_mapping(aws, repo: Repository) -> None:
    number = Number(number="+15550001111", account_id="acc_async", route=Route(socket_url="vapi"))
    session = aioboto3.Session()
    async with session.client("dynamodb") as client:
        arepo = AsyncRepository(client, aws.table_name)
        await arepo.put(number)
        assert await arepo.get(Number, "+15550001111") == number
        with pytest.raises(AlreadyExists):
            await arepo.put(number, create_only=True)
        page = await arepo.list(account_partition("acc_async", "NUMBERS"), Number)
        assert page.items == [number]
        # What the async side wrote, the sync side reads identically.
        assert repo.get(Number, "+15550001111") == number
        await arepo.delete(Number, "+15550001111")
        with pytest.raises(NotFound):
            await arepo.delete(Number, "+15550001111")
