from __future__ import annotations

import pytest

from edge_media.rtp.dtmf import (
    DtmfDigit,
    DtmfEmit,
    DtmfPacket,
    DtmfParseError,
    DtmfReceiver,
    DtmfSender,
    DtmfTrigger,
    TelephoneEvent,
)

# Digit 5, volume 10, 100 ms from timestamp 1000: four updates, then three end packets.
PRESS_5 = [
    (bytes.fromhex("050a00a0"), True),
    (bytes.fromhex("050a0140"), False),
    (bytes.fromhex("050a01e0"), False),
    (bytes.fromhex("050a0280"), False),
    (bytes.fromhex("058a0320"), False),
    (bytes.fromhex("058a0320"), False),
    (bytes.fromhex("058a0320"), False),
]


def feed(
    receiver: DtmfReceiver,
    packets: list[tuple[bytes, bool]],
    timestamp: int,
    start: float = 0.0,
    step: float = 0.02,
) -> list[list[DtmfDigit]]:
    """Feed packets 20 ms apart; returns what each packet produced."""
    return [
        receiver.on_packet(payload, timestamp, marker, start + index * step)
        for index, (payload, marker) in enumerate(packets)
    ]


def test_event_block_parse_and_serialize() -> None:
    block = TelephoneEvent.parse(bytes.fromhex("058a0320"))
    assert block == TelephoneEvent(event=5, end=True, volume=10, duration=800)
    assert block.serialize() == bytes.fromhex("058a0320")
    # The reserved R bit is ignored on receive.
    assert TelephoneEvent.parse(bytes.fromhex("0b4f0010")) == TelephoneEvent(11, False, 15, 16)


@pytest.mark.parametrize("size", [0, 1, 2, 3])
def test_short_payload(size: int) -> None:
    with pytest.raises(DtmfParseError) as caught:
        TelephoneEvent.parse(bytes.fromhex("058a0320")[:size])
    assert str(caught.value) == f"telephone-event payload is {size} bytes, needs at least 4"


def test_sender_sequence_for_100_ms() -> None:
    packets = DtmfSender().packets("5", 100, 1000)
    assert packets == [DtmfPacket(payload, marker, 1000) for payload, marker in PRESS_5]


def test_sender_single_tick_press_marks_first_end_packet() -> None:
    assert DtmfSender(volume=0).packets("#", 20, 7) == [
        DtmfPacket(bytes.fromhex("0b8000a0"), True, 7),
        DtmfPacket(bytes.fromhex("0b8000a0"), False, 7),
        DtmfPacket(bytes.fromhex("0b8000a0"), False, 7),
    ]


def test_sender_rounds_duration_up_to_whole_ticks() -> None:
    packets = DtmfSender().packets("flash", 50, 0)
    assert [p.payload.hex() for p in packets] == [
        "100a00a0",
        "100a0140",
        "108a01e0",
        "108a01e0",
        "108a01e0",
    ]


def test_sender_refuses_bad_input() -> None:
    with pytest.raises(ValueError, match=r"^'x' is not a DTMF digit"):
        DtmfSender().packets("x", 100, 0)
    with pytest.raises(ValueError, match="needs long-event segments"):
        DtmfSender().packets("1", 9000, 0)
    with pytest.raises(ValueError, match=r"^DTMF volume 64 is outside 0\.\.63$"):
        DtmfSender(volume=64)


def test_start_mode_reports_once_at_the_first_packet() -> None:
    results = feed(DtmfReceiver(), PRESS_5, 1000)
    assert results[0] == [DtmfDigit("5", 5, 1000, 160, 10, DtmfTrigger.START)]
    assert results[1:] == [[]] * 6


def test_end_mode_reports_once_at_the_first_end_packet() -> None:
    results = feed(DtmfReceiver(emit=DtmfEmit.END), PRESS_5, 1000)
    assert results[:4] == [[]] * 4
    assert results[4] == [DtmfDigit("5", 5, 1000, 800, 10, DtmfTrigger.END)]
    assert results[5:] == [[], []]
    assert results[4][0].duration_ms == 100.0


@pytest.mark.parametrize("emit", [DtmfEmit.START, DtmfEmit.END])
def test_retransmitted_packets_after_the_end_are_ignored(emit: DtmfEmit) -> None:
    receiver = DtmfReceiver(emit=emit)
    feed(receiver, PRESS_5, 1000)
    # The whole press again, much later (a retransmitting or looping sender).
    assert feed(receiver, PRESS_5, 1000, start=5.0) == [[]] * 7


@pytest.mark.parametrize("emit", [DtmfEmit.START, DtmfEmit.END])
def test_only_end_packets_still_give_one_digit(emit: DtmfEmit) -> None:
    receiver = DtmfReceiver(emit=emit)
    results = feed(receiver, PRESS_5[4:], 1000)
    trigger = DtmfTrigger.START if emit is DtmfEmit.START else DtmfTrigger.END
    assert results == [[DtmfDigit("5", 5, 1000, 800, 10, trigger)], [], []]


def test_lost_start_packet_reports_from_the_first_update() -> None:
    results = feed(DtmfReceiver(), PRESS_5[2:], 1000)
    assert results[0] == [DtmfDigit("5", 5, 1000, 480, 10, DtmfTrigger.START)]
    assert results[1:] == [[]] * 4


@pytest.mark.parametrize("emit", [DtmfEmit.START, DtmfEmit.END])
def test_two_presses_of_the_same_digit(emit: DtmfEmit) -> None:
    receiver = DtmfReceiver(emit=emit)
    first = feed(receiver, PRESS_5, 1000)
    second = feed(receiver, PRESS_5, 4000, start=0.3)
    digits = [d for batch in first + second for d in batch]
    assert [(d.digit, d.timestamp) for d in digits] == [("5", 1000), ("5", 4000)]


def test_lost_end_packets_time_out_in_end_mode() -> None:
    receiver = DtmfReceiver(emit=DtmfEmit.END, end_timeout=0.5)
    feed(receiver, PRESS_5[:4], 1000)  # last packet at t=0.06
    assert receiver.deadline == pytest.approx(0.56)
    assert receiver.poll(0.55) == []
    assert receiver.poll(0.56) == [DtmfDigit("5", 5, 1000, 640, 10, DtmfTrigger.TIMEOUT)]
    assert receiver.deadline is None
    # The end packets turning up after the timeout are not a second press.
    assert feed(receiver, PRESS_5[4:], 1000, start=0.7) == [[], [], []]


def test_timeout_in_start_mode_only_closes_the_press() -> None:
    receiver = DtmfReceiver(end_timeout=0.5)
    assert feed(receiver, PRESS_5[:2], 1000)[0][0].trigger is DtmfTrigger.START
    assert receiver.poll(1.0) == []
    assert receiver.deadline is None


def test_timeout_is_also_checked_when_the_next_packet_arrives() -> None:
    receiver = DtmfReceiver(emit=DtmfEmit.END, end_timeout=0.5)
    feed(receiver, PRESS_5[:2], 1000)
    results = receiver.on_packet(bytes.fromhex("010a00a0"), 9000, True, 2.0)
    assert results == [DtmfDigit("5", 5, 1000, 320, 10, DtmfTrigger.TIMEOUT)]


def test_new_press_supersedes_one_whose_end_was_lost() -> None:
    receiver = DtmfReceiver(emit=DtmfEmit.END)
    feed(receiver, PRESS_5[:3], 1000)
    results = receiver.on_packet(bytes.fromhex("090a00a0"), 2000, True, 0.1)
    assert results == [DtmfDigit("5", 5, 1000, 480, 10, DtmfTrigger.SUPERSEDED)]
    results = receiver.on_packet(bytes.fromhex("098a0140"), 2000, False, 0.12)
    assert results == [DtmfDigit("9", 9, 2000, 320, 10, DtmfTrigger.END)]


def test_start_mode_reports_both_presses_when_an_end_was_lost() -> None:
    receiver = DtmfReceiver()
    feed(receiver, PRESS_5[:3], 1000)
    results = receiver.on_packet(bytes.fromhex("090a00a0"), 2000, True, 0.1)
    assert results == [DtmfDigit("9", 9, 2000, 160, 10, DtmfTrigger.START)]


def test_long_press_segments_are_one_press() -> None:
    # §2.5.1.3 with a small segment for brevity: segment 1 reaches 1000 units, then segment 2
    # starts at timestamp + 1000 without a marker.
    receiver = DtmfReceiver(emit=DtmfEmit.END)
    assert receiver.on_packet(bytes.fromhex("030a01f4"), 50000, True, 0.0) == []
    assert receiver.on_packet(bytes.fromhex("030a03e8"), 50000, False, 0.05) == []
    assert receiver.on_packet(bytes.fromhex("030a00c8"), 51000, False, 0.1) == []
    results = receiver.on_packet(bytes.fromhex("038a0190"), 51000, False, 0.15)
    assert results == [DtmfDigit("3", 3, 50000, 1400, 10, DtmfTrigger.END)]
    # A retransmitted end of the first segment is remembered too.
    assert receiver.on_packet(bytes.fromhex("038a03e8"), 50000, False, 0.2) == []


def test_same_digit_after_a_gap_is_a_new_press_not_a_segment() -> None:
    receiver = DtmfReceiver()
    receiver.on_packet(bytes.fromhex("030a00a0"), 0, True, 0.0)
    results = receiver.on_packet(bytes.fromhex("030a00a0"), 2000, True, 0.3)
    assert [(d.digit, d.timestamp) for d in results] == [("3", 2000)]


def test_all_named_events() -> None:
    receiver = DtmfReceiver()
    names = []
    for event in range(17):
        payload = bytes((event, 0x80 | 7)) + b"\x00\xa0"
        names.extend(d.digit for d in receiver.on_packet(payload, event * 1000, True, 0.0))
    assert names == [*"0123456789*#ABCD", "flash"]


def test_events_beyond_flash_are_ignored() -> None:
    receiver = DtmfReceiver()
    assert receiver.on_packet(bytes.fromhex("208a0320"), 0, True, 0.0) == []  # 32: modem ANS
    assert receiver.deadline is None


def test_volume_is_reported_from_the_latest_packet() -> None:
    receiver = DtmfReceiver(emit=DtmfEmit.END)
    receiver.on_packet(bytes.fromhex("041400a0"), 0, True, 0.0)
    results = receiver.on_packet(bytes.fromhex("04940140"), 0, False, 0.02)
    assert [(d.digit, d.volume, d.duration) for d in results] == [("4", 20, 320)]


def test_reset_forgets_finished_presses() -> None:
    receiver = DtmfReceiver()
    feed(receiver, PRESS_5, 1000)
    receiver.reset()
    assert feed(receiver, PRESS_5, 1000)[0][0].digit == "5"
