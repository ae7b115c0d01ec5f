"""What the native connectors share: the account read and the deadline every step draws on."""

from __future__ import annotations

import asyncio

import pytest

from edge_media.drivers.base import BotUnavailable, CallInfo, ConnectStep
from edge_media.drivers.context import DriverContext
from edge_media.drivers.elevenlabs_driver import elevenlabs_connector
from edge_media.drivers.provider_connect import Deadline, read_account
from edge_media.drivers.vapi_driver import vapi_connector
from shared.models import Account
from shared.settings import Settings
from tests.edge_media.drivers.recording_leg import RecordingLeg

pytestmark = pytest.mark.anyio

INFO = CallInfo(
    call_uuid="d3b07384-d113-444c-9b1d-1234567890ab",
    account_id="acc_1",
    direction="inbound",
    from_number="+15550001111",
    to_number="+15550002222",
)


async def broken_table(account_id: str) -> Account | None:
    raise ConnectionResetError("the table went away")


async def slow_table(account_id: str) -> Account | None:
    await asyncio.sleep(5)
    return None


@pytest.mark.parametrize("connector", [elevenlabs_connector, vapi_connector])
async def test_an_account_that_cannot_be_read_refuses_the_connect_instead_of_crashing(
    connector: object,
) -> None:
    context = DriverContext(Settings.load(environ={}), accounts=broken_table)
    connect = connector(context)  # type: ignore[operator]
    target = "elevenlabs&agent_1" if connector is elevenlabs_connector else "vapi&asst_1"
    with pytest.raises(BotUnavailable) as raised:
        await connect(target, INFO, RecordingLeg(), 1.0)
    assert raised.value.step is ConnectStep.CREDENTIALS
    assert "ConnectionResetError" in str(raised.value) and "acc_1" in str(raised.value)


async def test_a_slow_account_read_is_the_timeout_step() -> None:
    context = DriverContext(Settings.load(environ={}), accounts=slow_table)
    with pytest.raises(BotUnavailable) as raised:
        await read_account(context, "acc_1", Deadline(0.05, "ElevenLabs"))
    assert raised.value.step is ConnectStep.TIMEOUT


async def test_a_spent_deadline_names_the_step_it_ran_out_in() -> None:
    deadline = Deadline(0.01, "Vapi")
    assert deadline.left("create call") > 0
    await asyncio.sleep(0.02)
    with pytest.raises(BotUnavailable) as raised:
        deadline.left("socket of call c1")
    assert raised.value.step is ConnectStep.TIMEOUT
    assert str(raised.value) == "Vapi did not connect within 0.01 s (socket of call c1)"
