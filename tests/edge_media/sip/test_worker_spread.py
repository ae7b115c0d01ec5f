"""Call-ID ownership between media workers (edge_media/sip/worker_spread.py): the parts a
two-worker node relies on, and the forwarding itself between two meshes in this process."""

from __future__ import annotations

import asyncio
import secrets

import pytest

from edge_media.sip.endpoint import SipEndpoint
from edge_media.sip.transport import SipTransportConfig
from edge_media.sip.worker_spread import (
    WorkerSpread,
    call_id_of,
    decode_frame,
    encode_frame,
    own_call_id,
    owner_of,
)

REQUEST = (
    b"BYE sip:a@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1\r\n"
    b"From: <sip:b@127.0.0.1>;tag=1\r\nTo: <sip:a@127.0.0.1>;tag=2\r\n"
    b"%s\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n"
)


@pytest.mark.parametrize(
    "header",
    [b"Call-ID: abc@host", b"call-id:abc@host", b"CALL-ID :  abc@host  ", b"i: abc@host"],
)
def test_the_call_id_is_found_in_its_long_and_compact_forms(header: bytes) -> None:
    assert call_id_of(REQUEST % header) == b"abc@host"


def test_a_call_id_only_in_the_body_or_missing_is_not_found() -> None:
    body = b"x\r\nCall-ID: body@host\r\n"
    message = REQUEST.replace(b"%s\r\n", b"").replace(b"Content-Length: 0", b"Content-Length: 21")
    assert call_id_of(message + body) is None
    assert call_id_of(b"garbage") is None


def test_owners_are_stable_and_own_call_ids_come_home() -> None:
    assert owner_of(b"abc@host", 2) == owner_of(b"abc@host", 2)  # crc32: no per-process seed
    seen = {owner_of(secrets.token_hex(16).encode(), 4) for _ in range(200)}
    assert seen == {0, 1, 2, 3}
    for index in range(4):
        made = own_call_id(index, 4, lambda: secrets.token_hex(16))
        assert owner_of(made.encode(), 4) == index


def test_an_endpoint_of_a_worker_makes_call_ids_that_worker_owns() -> None:
    spread = WorkerSpread(1, 3, "unit")
    endpoint = SipEndpoint("127.0.0.1", 0, transport_config=SipTransportConfig(spread=spread))
    assert {owner_of(endpoint.new_call_id().encode(), 3) for _ in range(20)} == {1}


@pytest.mark.parametrize("remote", [("127.0.0.1", 5060), ("::1", 65535)])
def test_frames_carry_the_datagram_and_its_source(remote: tuple[str, int]) -> None:
    data = b"OPTIONS sip:x SIP/2.0\r\n\r\nbody\nwith\nnewlines"
    assert decode_frame(encode_frame(data, remote)) == (data, remote)
    assert decode_frame(b"no separators") is None


@pytest.mark.anyio
async def test_a_datagram_reaches_the_worker_owning_its_call_id() -> None:
    mesh = f"unit-{secrets.token_hex(4)}"
    workers = [WorkerSpread(i, 2, mesh) for i in range(2)]
    got: list[list[tuple[bytes, tuple[str, int]]]] = [[], []]
    for spread, inbox in zip(workers, got, strict=True):
        await spread.start(lambda data, remote, inbox=inbox: inbox.append((data, remote)))
    try:
        ids = [f"c{n}@host" for n in range(20)]
        kept = []
        for call_id in ids:
            message = REQUEST % f"Call-ID: {call_id}".encode()
            if not workers[0].forward(message, ("127.0.0.1", 5070)):
                kept.append(call_id)
        for _ in range(100):
            if len(got[1]) + len(kept) == len(ids):
                break
            await asyncio.sleep(0.01)
        assert kept == [c for c in ids if owner_of(c.encode(), 2) == 0]
        arrived = [call_id_of(data) for data, _ in got[1]]
        assert arrived == [c.encode() for c in ids if owner_of(c.encode(), 2) == 1]
        assert {remote for _, remote in got[1]} == {("127.0.0.1", 5070)}
        assert got[0] == []
    finally:
        for spread in workers:
            spread.close()


@pytest.mark.anyio
async def test_an_owner_that_is_not_there_leaves_the_datagram_here() -> None:
    alone = WorkerSpread(0, 2, f"unit-{secrets.token_hex(4)}")
    await alone.start(lambda data, remote: None)
    try:
        others = [c for c in (f"c{n}@host" for n in range(20)) if owner_of(c.encode(), 2) == 1]
        message = REQUEST % f"Call-ID: {others[0]}".encode()
        assert alone.forward(message, ("127.0.0.1", 5070)) is False
        assert alone.undeliverable == 1
    finally:
        alone.close()
