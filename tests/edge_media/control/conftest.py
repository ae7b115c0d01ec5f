"""Fixtures for the node's control plane: aioboto3 clients on moto and per-test queues.

Each test gets its own events/command queues (fresh names), so messages of other tests never
show up; the table is the session's (tests use fresh uuids).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import aioboto3
import pytest

from shared.settings import Settings


@dataclass
class Aws:
    dynamodb: Any
    sqs: Any
    table_name: str

    async def new_queue(self, name: str, **attributes: str) -> str:
        tag = uuid.uuid4().hex[:10]
        response = await self.sqs.create_queue(
            QueueName=f"{name}-{tag}", Attributes={"VisibilityTimeout": "30", **attributes}
        )
        return str(response["QueueUrl"])

    async def bodies(self, queue_url: str, limit: int = 10) -> list[str]:
        """Every message currently visible in a queue (bounded receives), left undeleted."""
        seen: dict[str, str] = {}
        for _ in range(limit):
            response = await self.sqs.receive_message(
                QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0, VisibilityTimeout=5
            )
            messages = response.get("Messages", [])
            if not messages:
                break
            for message in messages:
                seen[message["MessageId"]] = message["Body"]
        return list(seen.values())

    async def counts(self, queue_url: str) -> tuple[int, int]:
        """(visible, in flight) messages of a queue."""
        attrs = (
            await self.sqs.get_queue_attributes(
                QueueUrl=queue_url,
                AttributeNames=[
                    "ApproximateNumberOfMessages",
                    "ApproximateNumberOfMessagesNotVisible",
                ],
            )
        )["Attributes"]
        return (
            int(attrs["ApproximateNumberOfMessages"]),
            int(attrs["ApproximateNumberOfMessagesNotVisible"]),
        )


@pytest.fixture
async def aio(aws: Any, anyio_backend: str) -> AsyncIterator[Aws]:
    session = aioboto3.Session()
    async with session.client("dynamodb") as dynamodb, session.client("sqs") as sqs:
        yield Aws(dynamodb, sqs, aws.table_name)


@pytest.fixture
def settings(aws: Any) -> Settings:
    return Settings.load()


class WallClock:
    """A wall clock the test moves by hand (aware UTC datetimes, whole milliseconds)."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2026, 2, 9, 14, 30, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def wall() -> WallClock:
    return WallClock()
