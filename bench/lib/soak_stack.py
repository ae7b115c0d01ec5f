"""The soak's control plane: moto in a process of its own, kept small while calls churn.

Why not bench/calls.py's moto in the bench process: a soak writes thousands of call records,
and moto's TransactWriteItems deep-copies the whole table for every transaction (the call slots,
shared/call_slots.py, take two per call). As the table grows each slot acquire gets slower, the
node's 2 s route lookup starts to time out, those calls fail, sipp replaces them at once, and the
soak measures moto's collapse instead of the node. Two things keep it off: moto runs in its own
process (infra/moto_process.py: its heap is frozen for the collector, and its GIL is not the
sampler's), and `Janitor` counts and deletes the records of calls that ended, so the table holds
about N live calls' items whatever the soak's length. A record that never becomes final is never
deleted: it is what the end of the run reports as stuck.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from bench.calls import LocalStack

JANITOR_EVERY_S = 15.0
ENDED_AGE_S = 30.0  # a final record this old gets no more writes from the node
RATE_ITEM_AGE_S = 120.0  # CPS#<window> items: their TTL is a minute past the window
DELETE_PAUSE_S = 0.02
PAGE = 100  # the listing's largest page (shared/dynamo/mapping.py)
MAX_PAGES = 2000


@dataclass
class Janitor:
    """Every JANITOR_EVERY_S, counts the account's final call records by status and deletes
    those that ended over ENDED_AGE_S ago, and the account's old calls-per-second windows."""

    stack: LocalStack
    account_id: str
    deleted: Counter[str] = field(default_factory=Counter)
    errors: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="soak-janitor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(JANITOR_EVERY_S * 4)

    def _run(self) -> None:
        while not self._stop.wait(JANITOR_EVERY_S):
            try:
                self.sweep()
            except Exception:  # moto under load: the next sweep tries again
                self.errors += 1

    def sweep(self) -> None:
        from shared.dynamo.mapping import account_partition, key
        from shared.models import Call

        repo, client = self.stack.repo, self.stack.repo.client
        now = datetime.now(UTC)
        cursor: str | None = None
        done: list[Call] = []
        for _ in range(MAX_PAGES):
            page = repo.list(
                account_partition(self.account_id, "CALLS"), Call, limit=PAGE, cursor=cursor
            )
            done += [
                c
                for c in page.items
                if c.status.terminal
                and c.ended_at is not None
                and (now - c.ended_at).total_seconds() > ENDED_AGE_S
            ]
            cursor = page.next_cursor
            if cursor is None or self._stop.is_set():
                break
        for call in done:
            client.delete_item(TableName=repo.table, Key=key(Call, call.call_uuid))
            self.deleted[str(call.status)] += 1
            # Spread out: moto runs DynamoDB writes one at a time (infra/moto_process.py), and a
            # burst of a few hundred deletes would hold up the node's lookups for seconds.
            if self._stop.wait(DELETE_PAUSE_S):
                return
        oldest = int(time.time() - RATE_ITEM_AGE_S)
        windows = client.query(
            TableName=repo.table,
            KeyConditionExpression="pk = :p AND begins_with(sk, :s)",
            ExpressionAttributeValues={
                ":p": {"S": f"ACCOUNT#{self.account_id}"},
                ":s": {"S": "CPS#"},
            },
            ProjectionExpression="pk, sk",
        )
        for item in windows.get("Items", []):
            start = item["sk"]["S"].removeprefix("CPS#")
            if start.isdigit() and int(start) < oldest:
                client.delete_item(TableName=repo.table, Key={"pk": item["pk"], "sk": item["sk"]})


def table_kinds(stack: LocalStack, limit_pages: int = 50) -> dict[str, int]:
    """Items in the table by entity kind (a bounded scan): what a soak leaves behind."""
    client, table = stack.repo.client, stack.repo.table
    kinds: Counter[str] = Counter()
    start: dict[str, Any] | None = None
    for _ in range(limit_pages):
        request: dict[str, Any] = {"TableName": table, "ProjectionExpression": "pk, sk, entity"}
        if start:
            request["ExclusiveStartKey"] = start
        response = client.scan(**request)
        for item in response.get("Items", []):
            kind = item.get("entity", {}).get("S") or item["pk"]["S"].split("#", 1)[0]
            kinds[kind] += 1
        start = response.get("LastEvaluatedKey")
        if not start:
            break
    return dict(kinds)
