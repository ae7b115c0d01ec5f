from __future__ import annotations

import pytest
from pydantic import ValidationError

from shared.models import CallStatus, Number, Route, TelephonyConfig, Trunk


def first_error(exc: ValidationError) -> tuple[tuple, str]:
    err = exc.errors()[0]
    return err["loc"], err["msg"]


def test_route_needs_exactly_one_target() -> None:
    with pytest.raises(
        ValidationError, match="exactly one of socket_url, webhook_url or agent_uuid"
    ):
        Route()
    with pytest.raises(ValidationError, match="exactly one"):
        Route(socket_url="vapi", webhook_url="https://example.com/x")
    assert Route(socket_url="elevenlabs&agent_1").socket_url == "elevenlabs&agent_1"


def test_number_is_normalised_and_errors_name_the_field() -> None:
    number = Number(number="5511 99999 9999", account_id="a", route=Route(socket_url="vapi"))
    assert number.number == "+5511999999999"
    with pytest.raises(ValidationError) as info:
        Number(number="abc", account_id="a", route=Route(socket_url="vapi"))
    loc, msg = first_error(info.value)
    assert loc == ("number",) and "E.164" in msg


def test_unknown_fields_are_refused() -> None:
    with pytest.raises(ValidationError) as info:
        Trunk(account_id="a", name="t", host="h", colour="blue")
    assert first_error(info.value)[0] == ("colour",)


def test_trunk_sources_are_cidrs() -> None:
    trunk = Trunk(account_id="a", name="t", host="h", inbound_sources=["203.0.113.7", "10.0.0.0/8"])
    assert trunk.inbound_sources == ["203.0.113.7/32", "10.0.0.0/8"]
    with pytest.raises(ValidationError, match="is not an IP address or CIDR"):
        Trunk(account_id="a", name="t", host="h", inbound_sources=["example.com"])


def test_telephony_config_needs_provider_fields() -> None:
    with pytest.raises(ValidationError, match="provider twilio needs account_sid and auth_token"):
        TelephonyConfig(account_id="a", provider="twilio")
    ok = TelephonyConfig(
        account_id="a", provider="twilio", account_sid="AC" + "0" * 32, auth_token="x"
    )
    assert ok.provider == "twilio"


def test_status_ranks_only_move_forward() -> None:
    order = [CallStatus.QUEUED, CallStatus.RINGING, CallStatus.IN_PROGRESS, CallStatus.COMPLETED]
    assert [s.rank for s in order] == [0, 1, 2, 3]
    assert all(s.terminal for s in (CallStatus.BUSY, CallStatus.NO_ANSWER, CallStatus.CANCELED))
    assert not CallStatus.IN_PROGRESS.terminal
