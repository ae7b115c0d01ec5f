"""A transfer to a SIP URI at the node: its host is checked (SSRF) before anything changes, and
the node dials the checked address, never a second lookup.

`CommandHandler` runs as on a node; the call, its SIP leg and the user agent are fakes that
record what would have been sent (no SIP leaves the process). "Public" is a documentation
address opened by the policy's allow list, as an operator would with ``AGERA_SSRF_ALLOW_LIST``.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import pytest

from edge_media.bridge.commands import CommandHandler
from shared.commands import Transfer
from shared.ssrf import AddressPolicy

pytestmark = pytest.mark.anyio

PUBLIC = "203.0.113.9"
ALLOW_PUBLIC = ("203.0.113.0/24",)


class Leg:
    """A SIP leg: the answered caller (no REFER support), or the dialed target (never answers)."""

    def __init__(self) -> None:
        self.peer_allow: set[str] = {"INVITE", "ACK", "BYE"}
        self.peer = ("198.51.100.20", 5060)
        self.hangups: list[str] = []
        self.media = None

    @property
    def is_ended(self) -> bool:
        return bool(self.hangups)

    async def hangup(self, cause: str = "NORMAL_CLEARING") -> None:
        self.hangups.append(cause)

    async def wait_answered(self) -> bool:
        return False


class FakeUa:
    def __init__(self) -> None:
        self.invites: list[dict[str, Any]] = []

    def invite(self, target: str, **options: Any) -> Leg:
        self.invites.append({"target": target, **options})
        return Leg()


class FakeLive:
    """What `CommandHandler.transfer` touches on a `LiveCall`."""

    def __init__(self) -> None:
        self.call_uuid = uuid.uuid4()
        self.remote_transfer = None
        self.sip = Leg()
        self.answered = True
        self.transferring = False
        self.stopped: list[str] = []
        self.events: list[Any] = []
        self.info = SimpleNamespace(from_number="+15550001111", account_id="acc_1")
        self.log = logging.LoggerAdapter(logging.getLogger("test.transfer"), {})

    async def stop_bot(self, reason: str) -> None:
        self.stopped.append(reason)

    async def event(self, event: Any) -> bool:
        self.events.append(event)
        return True

    def add_stats(self, **figures: Any) -> None:
        pass


class Rebinding:
    def __init__(self, first: Sequence[str], later: Sequence[str]) -> None:
        self.first, self.later = list(first), list(later)
        self.asked: list[str] = []

    def __call__(self, host: str) -> list[str]:
        self.asked.append(host)
        return self.first if len(self.asked) == 1 else self.later


def handler_for(live: FakeLive, policy: AddressPolicy | None) -> tuple[CommandHandler, FakeUa]:
    ua = FakeUa()
    services = SimpleNamespace(live={live.call_uuid: live})

    async def nothing(*args: Any) -> None:
        return None

    handler = CommandHandler(
        ua,  # type: ignore[arg-type]
        services=services,  # type: ignore[arg-type]
        accounts=nothing,
        trunk_for=nothing,
        policy=policy,
    )
    return handler, ua


async def transfer(handler: CommandHandler, live: FakeLive, destination: str) -> None:
    await handler.handle(
        Transfer(call_uuid=live.call_uuid, account_id="acc_1", destination=destination)
    )
    if handler.tasks:
        await asyncio.wait_for(asyncio.gather(*handler.tasks), 5)


@pytest.mark.parametrize(
    ("destination", "resolve", "why"),
    [
        ("sip:pbx@10.1.2.3:5070", None, "10.1.2.3 is a private address"),
        ("sip:admin@127.0.0.1", None, "127.0.0.1 is a loopback address"),
        ("sips:x@[fd00:ec2::254]", None, "cloud metadata service"),
        (
            "sip:desk@pbx.customer.example",
            Rebinding([PUBLIC, "127.0.0.1"], [PUBLIC]),
            "pbx.customer.example (127.0.0.1) is a loopback address",
        ),
    ],
    ids=["private", "loopback", "metadata", "name-public-and-private"],
)
async def test_a_private_sip_target_is_refused_and_the_bot_stays_on(
    caplog: pytest.LogCaptureFixture, destination: str, resolve: Any, why: str
) -> None:
    live = FakeLive()
    policy = AddressPolicy(ALLOW_PUBLIC, resolve) if resolve else AddressPolicy(ALLOW_PUBLIC)
    handler, ua = handler_for(live, policy)
    with caplog.at_level(logging.WARNING, logger="test.transfer"):
        await transfer(handler, live, destination)
    assert ua.invites == []  # nothing dialed
    assert live.stopped == [] and not live.transferring  # the caller keeps the bot
    assert live.sip.hangups == [] and live.events == []
    [warning] = [r.getMessage() for r in caplog.records if r.name == "test.transfer"]
    assert warning.startswith("transfer refused by the SSRF policy: ") and why in warning


async def test_the_default_policy_allows_no_private_range() -> None:
    live = FakeLive()
    handler, ua = handler_for(live, None)
    await transfer(handler, live, "sip:pbx@192.168.1.10")
    assert ua.invites == [] and live.stopped == []


async def test_a_rebinding_name_is_dialed_at_the_address_that_was_checked() -> None:
    live = FakeLive()
    resolve = Rebinding([PUBLIC], ["127.0.0.1"])
    handler, ua = handler_for(live, AddressPolicy(ALLOW_PUBLIC, resolve))
    await transfer(handler, live, "sip:desk@pbx.customer.example:5080;transport=tcp")
    assert resolve.asked == ["pbx.customer.example"]  # one lookup, the one dialed
    [invite] = ua.invites
    assert invite["target"] == "sip:desk@pbx.customer.example:5080;transport=tcp"
    assert invite["addr"] == (PUBLIC, 5080) and invite["kind"] == "tcp"
    assert live.stopped == ["transferred"]
    assert live.sip.hangups == ["NORMAL_TEMPORARY_FAILURE"]  # the fake target never answers


async def test_an_allowed_private_range_is_dialed() -> None:
    live = FakeLive()
    handler, ua = handler_for(live, AddressPolicy(("127.0.0.0/8",)))
    await transfer(handler, live, "sip:bob@127.0.0.1:5070")
    assert [invite["addr"] for invite in ua.invites] == [("127.0.0.1", 5070)]
