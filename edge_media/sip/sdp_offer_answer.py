"""RFC 3264 offer/answer for one audio stream, and the per-dialog SDP state (RFC 3264 §8).

Why this shape: the dialog layer hands us a parsed offer or answer and wants back either an
answer plus what the RTP layer needs (address, port, payload types, direction), or a 488 with a
Warning. Nothing here touches sockets, clocks or randomness: session ids arrive in
``LocalMedia``, so every rule can be tested with plain values.

Scope, on purpose: audio over ``RTP/AVP`` with PCMU/PCMA and ``telephone-event/8000``. Every
other stream and codec in an offer is kept by the model (`sdp_model`) and answered with port 0,
never chosen.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

from edge_media.sip.sdp_model import (
    PCMA,
    PCMU,
    TELEPHONE_EVENT,
    Attribute,
    Codec,
    Connection,
    Direction,
    MediaDescription,
    Origin,
    SessionDescription,
)

__all__ = [
    "DEFAULT_PTIME_MS",
    "MAX_PEER_PTIME_MS",
    "MIN_PEER_PTIME_MS",
    "Answer",
    "LocalMedia",
    "NegotiatedMedia",
    "NegotiationFailure",
    "SdpSession",
    "build_offer",
    "negotiate_answer",
    "process_answer",
]

# Packetisation. We always send 20 ms frames (RFC 3551 §4.2: the default packetisation); a
# peer asking for anything from 10 to 60 ms is accepted and reported so the media layer can
# repacketise what it receives.
DEFAULT_PTIME_MS = 20
MIN_PEER_PTIME_MS = 10
MAX_PEER_PTIME_MS = 60

MAX_DTMF_EVENT = 255
AUDIO_PROTO = "RTP/AVP"
DEFAULT_DTMF_EVENTS = "0-15"  # RFC 4733 §2.4.1: no events listed means 0-15

# RFC 3261 §20.43 warn-codes used in a 488 answer.
WARN_NETWORK_ADDRESS = 301
WARN_TRANSPORT = 302
WARN_MEDIA_TYPE = 304
WARN_MEDIA_FORMAT = 305
WARN_TEXT = {
    WARN_NETWORK_ADDRESS: "Incompatible network address formats",
    WARN_TRANSPORT: "Incompatible transport protocol",
    WARN_MEDIA_TYPE: "Media type not available",
    WARN_MEDIA_FORMAT: "Incompatible media format",
}
NOT_ACCEPTABLE_HERE = 488

# RFC 3551 §6, Table 4: the static payload types of the codecs we offer.
_STATIC_PT_BY_CODEC = {PCMU: 0, PCMA: 8}


def _parse_events(text: str) -> frozenset[int] | None:
    """RFC 4733 §2.4.1 event list ``0-15,66``; None when unreadable."""
    events: set[int] = set()
    for item in text.replace(" ", "").split(","):
        low_text, dash, high_text = item.partition("-")
        if not low_text.isdigit() or (dash and not high_text.isdigit()):
            return None
        low = int(low_text)
        high = int(high_text) if dash else low
        if low > high or high > MAX_DTMF_EVENT:
            return None
        events.update(range(low, high + 1))
    return frozenset(events)


def _format_events(events: Iterable[int]) -> str:
    ordered = sorted(set(events))
    runs: list[str] = []
    start = previous = ordered[0]
    for event in [*ordered[1:], None]:
        if event is not None and event == previous + 1:
            previous = event
            continue
        runs.append(str(start) if start == previous else f"{start}-{previous}")
        if event is not None:
            start = previous = event
    return ",".join(runs)


@dataclass(frozen=True, slots=True)
class LocalMedia:
    """What we can do and where we listen. ``session_id``/``session_version`` come from the
    caller (RFC 8866 §5.2 suggests an NTP timestamp) so this module needs no clock."""

    address: str
    rtp_port: int
    session_id: int
    session_version: int = 1
    codecs: tuple[Codec, ...] = (PCMU, PCMA)
    dtmf_payload_type: int | None = 101  # used in our offers; None: never offer or accept DTMF
    dtmf_events: str = "0-16"
    rtcp_mux: bool = False  # RFC 5761: only if the RTP layer demultiplexes RTCP on one port
    username: str = "-"
    session_name: str = "-"

    def __post_init__(self) -> None:
        # Configuration mistakes are caller bugs, hence ValueError rather than SdpError.
        try:
            ipaddress.ip_address(self.address)
        except ValueError:
            raise ValueError(f"LocalMedia.address {self.address!r} is not an IP") from None
        if not 0 < self.rtp_port < 65536:
            raise ValueError(f"LocalMedia.rtp_port {self.rtp_port} out of range")
        if not self.codecs or any(c not in _STATIC_PT_BY_CODEC for c in self.codecs):
            raise ValueError("LocalMedia.codecs must be a non-empty subset of (PCMU, PCMA)")
        if self.dtmf_payload_type is not None and not 96 <= self.dtmf_payload_type <= 127:
            raise ValueError("LocalMedia.dtmf_payload_type must be dynamic (96-127)")
        if not _parse_events(self.dtmf_events):
            raise ValueError(f"LocalMedia.dtmf_events {self.dtmf_events!r} is not an event list")

    @property
    def addrtype(self) -> str:
        return "IP6" if ipaddress.ip_address(self.address).version == 6 else "IP4"

    def origin(self, version: int | None = None) -> Origin:
        return Origin(
            self.username,
            str(self.session_id),
            self.session_version if version is None else version,
            "IN",
            self.addrtype,
            self.address,
        )


@dataclass(frozen=True, slots=True)
class NegotiatedMedia:
    """What the RTP layer needs after a successful offer/answer.

    ``direction`` is ours: ``direction.sends`` says whether we may transmit RTP. The peer's
    ptime is reported as asked for; we still send ``DEFAULT_PTIME_MS`` frames.
    """

    media_index: int
    remote_address: str
    remote_port: int
    remote_rtcp_address: str
    remote_rtcp_port: int
    rtcp_mux: bool
    payload_type: int
    codec: Codec
    dtmf_payload_type: int | None  # PT the peer expects our RFC 4733 events on
    dtmf_receive_payload_type: int | None  # PT we declared for events we receive
    remote_ptime: int
    direction: Direction
    peer_on_hold: bool

    @property
    def codec_name(self) -> str:
        return self.codec.name


@dataclass(frozen=True, slots=True)
class Answer:
    """A successful answer: the SDP to send and the media parameters it commits us to."""

    sdp: SessionDescription
    media: NegotiatedMedia

    @property
    def body(self) -> bytes:
        return bytes(self.sdp)


@dataclass(frozen=True, slots=True)
class NegotiationFailure:
    """Nothing acceptable: answer ``status`` with a Warning (RFC 3261 §20.43 / §21.4.26)."""

    warn_code: int
    detail: str
    status: int = NOT_ACCEPTABLE_HERE

    @property
    def warn_text(self) -> str:
        return WARN_TEXT.get(self.warn_code, "Miscellaneous warning")

    def warning(self, agent: str) -> str:
        """Warning header value: ``warn-code SP warn-agent SP warn-text``."""
        return f'{self.warn_code} {agent} "{self.warn_text}"'


@dataclass(frozen=True, slots=True)
class _Remote:
    address: str
    on_hold: bool


def _check_remote(
    sdp: SessionDescription, media: MediaDescription, local_addrtype: str
) -> _Remote | NegotiationFailure:
    """Where to send RTP, or why we cannot. Addresses must be IP literals (no DNS here)."""
    connection = sdp.effective_connection(media)
    if connection is None:
        return NegotiationFailure(WARN_NETWORK_ADDRESS, "stream has no c= line")
    if connection.nettype != "IN" or connection.addrtype not in ("IP4", "IP6"):
        detail = f"network type {connection.nettype} {connection.addrtype} not supported"
        return NegotiationFailure(WARN_NETWORK_ADDRESS, detail)
    try:
        address = ipaddress.ip_address(connection.address)
    except ValueError:
        detail = f"connection address {connection.address!r} is not a unicast IP literal"
        return NegotiationFailure(WARN_NETWORK_ADDRESS, detail)
    if f"IP{address.version}" != connection.addrtype:
        detail = f"connection address {address} does not match {connection.addrtype}"
        return NegotiationFailure(WARN_NETWORK_ADDRESS, detail)
    if address.is_multicast:
        return NegotiationFailure(WARN_NETWORK_ADDRESS, f"multicast {address} not supported")
    if connection.addrtype != local_addrtype:
        detail = f"peer media is {connection.addrtype}, ours is {local_addrtype}"
        return NegotiationFailure(WARN_NETWORK_ADDRESS, detail)
    # RFC 3264 §8.4: RFC 2543 peers hold with c=0.0.0.0; "::" is treated the same way.
    return _Remote(str(address), address.is_unspecified)


def _check_ptime(sdp: SessionDescription, media: MediaDescription) -> int | NegotiationFailure:
    ptime = sdp.effective_ptime(media)
    if ptime is None:
        ptime = DEFAULT_PTIME_MS
    if not MIN_PEER_PTIME_MS <= ptime <= MAX_PEER_PTIME_MS:
        detail = f"ptime {ptime:g} ms outside {MIN_PEER_PTIME_MS}-{MAX_PEER_PTIME_MS} ms"
        return NegotiationFailure(WARN_MEDIA_FORMAT, detail)
    maxptime = media.maxptime
    if maxptime is not None and maxptime < DEFAULT_PTIME_MS:
        detail = f"maxptime {maxptime:g} ms is below the {DEFAULT_PTIME_MS} ms we send"
        return NegotiationFailure(WARN_MEDIA_FORMAT, detail)
    return round(ptime)


def _rtcp_target(media: MediaDescription, address: str, mux: bool) -> tuple[str, int]:
    if mux:
        return address, media.port  # RFC 5761 §5.1: RTCP shares the RTP port
    explicit = media.rtcp
    if explicit is not None:  # RFC 3605: explicit RTCP port (and address)
        port, connection = explicit
        return (connection.address if connection is not None else address), port
    return address, media.port + 1  # RFC 3550 §11: next higher port


def _codec_names(media: MediaDescription) -> str:
    names = []
    for payload_type in media.payload_types:
        codec = media.codec_for(payload_type)
        names.append(str(codec) if codec is not None else f"PT {payload_type}")
    return ", ".join(names) or "none"


def _accept_audio(
    offer: SessionDescription, index: int, media: MediaDescription, local: LocalMedia
) -> NegotiatedMedia | NegotiationFailure:
    if media.proto.upper() != AUDIO_PROTO:
        return NegotiationFailure(WARN_TRANSPORT, f"transport {media.proto} not supported")
    remote = _check_remote(offer, media, local.addrtype)
    if isinstance(remote, NegotiationFailure):
        return remote
    ptime = _check_ptime(offer, media)
    if isinstance(ptime, NegotiationFailure):
        return ptime
    chosen: tuple[int, Codec] | None = None
    dtmf: int | None = None
    # RFC 3264 §6.1: the answerer SHOULD keep the offerer's preference, so the first codec in
    # the OFFER's order that we support wins; our own order only shapes our offers.
    for payload_type in media.payload_types:
        codec = media.codec_for(payload_type)
        if codec is None:
            continue
        if chosen is None and codec in local.codecs:
            chosen = (payload_type, codec)
        elif dtmf is None and codec is TELEPHONE_EVENT and local.dtmf_payload_type is not None:
            dtmf = payload_type
    if chosen is None:
        detail = f"no common codec: offer has {_codec_names(media)}"
        return NegotiationFailure(WARN_MEDIA_FORMAT, detail)
    if dtmf is not None and not _dtmf_events(media, dtmf, local):
        dtmf = None
    # RFC 3264 §6.1: sendonly -> recvonly, recvonly -> sendonly, inactive -> inactive,
    # sendrecv -> sendrecv. A legacy 0.0.0.0 hold means the peer cannot receive.
    offered = offer.effective_direction(media)
    if remote.on_hold:
        offered = Direction.from_flags(sends=offered.sends, receives=False)
    mux = media.rtcp_mux and local.rtcp_mux
    rtcp_address, rtcp_port = _rtcp_target(media, remote.address, mux)
    return NegotiatedMedia(
        media_index=index,
        remote_address=remote.address,
        remote_port=media.port,
        remote_rtcp_address=rtcp_address,
        remote_rtcp_port=rtcp_port,
        rtcp_mux=mux,
        payload_type=chosen[0],
        codec=chosen[1],
        dtmf_payload_type=dtmf,
        dtmf_receive_payload_type=dtmf,
        remote_ptime=ptime,
        direction=offered.reversed(),
        peer_on_hold=not offered.receives,
    )


def _dtmf_events(media: MediaDescription, payload_type: int, local: LocalMedia) -> str:
    """The events both sides handle, as an RFC 4733 list; empty if there are none.

    An fmtp we cannot read is treated like a missing one (RFC 4733 §2.4.1 default 0-15):
    losing keypad digits over a cosmetic quirk would be worse than assuming the default.
    """
    default = _parse_events(DEFAULT_DTMF_EVENTS) or frozenset()
    offered = _parse_events(media.fmtps.get(str(payload_type), "")) or default
    common = offered & (_parse_events(local.dtmf_events) or frozenset())
    return _format_events(common) if common else ""


def _audio_lines(
    local: LocalMedia,
    codecs: Sequence[tuple[int, Codec]],
    dtmf: tuple[int, str] | None,
    direction: Direction,
    rtcp_mux: bool,
) -> MediaDescription:
    formats = [str(pt) for pt, _ in codecs]
    attributes = [Attribute("rtpmap", f"{pt} {codec}") for pt, codec in codecs]
    if dtmf is not None:
        formats.append(str(dtmf[0]))
        attributes.append(Attribute("rtpmap", f"{dtmf[0]} {TELEPHONE_EVENT}"))
        attributes.append(Attribute("fmtp", f"{dtmf[0]} {dtmf[1]}"))
    attributes.append(Attribute("ptime", str(DEFAULT_PTIME_MS)))
    if rtcp_mux:
        attributes.append(Attribute("rtcp-mux"))
    attributes.append(Attribute(direction.value))
    return MediaDescription(
        "audio", local.rtp_port, AUDIO_PROTO, tuple(formats), attributes=tuple(attributes)
    )


def _rejected(media: MediaDescription) -> MediaDescription:
    # RFC 3264 §6: reject with port 0; formats are ignored but one must be present.
    formats = media.formats or ("0",)
    return MediaDescription(media.media, 0, media.proto, formats)


def _session(local: LocalMedia, media: Sequence[MediaDescription]) -> SessionDescription:
    return SessionDescription(
        origin=local.origin(),
        session_name=local.session_name,
        connection=Connection("IN", local.addrtype, local.address),
        media=tuple(media),
    )


def negotiate_answer(offer: SessionDescription, local: LocalMedia) -> Answer | NegotiationFailure:
    """Answer an offer (RFC 3264 §6): one m= line per offered line, in the same order.

    The first acceptable ``m=audio`` line is answered with exactly one codec (plus
    telephone-event on the offer's own payload type, RFC 3264 §6.1), so both directions use
    the same codec and the media layer never sees a mid-call switch. Every other line is
    rejected with port 0. The failure reported is the first audio line's, or 304 when the
    offer has no usable audio line at all.
    """
    negotiated: NegotiatedMedia | None = None
    failure: NegotiationFailure | None = None
    lines: list[MediaDescription] = []
    for index, media in enumerate(offer.media):
        if negotiated is None and media.media == "audio" and media.port != 0:
            outcome = _accept_audio(offer, index, media, local)
            if isinstance(outcome, NegotiatedMedia):
                negotiated = outcome
                dtmf = outcome.dtmf_payload_type
                dtmf_line = (dtmf, _dtmf_events(media, dtmf, local)) if dtmf is not None else None
                codecs = [(outcome.payload_type, outcome.codec)]
                lines.append(
                    _audio_lines(local, codecs, dtmf_line, outcome.direction, outcome.rtcp_mux)
                )
                continue
            failure = failure or outcome
        lines.append(_rejected(media))
    if negotiated is None:
        return failure or NegotiationFailure(WARN_MEDIA_TYPE, "offer has no usable audio stream")
    return Answer(_session(local, lines), negotiated)


def build_offer(local: LocalMedia, direction: Direction = Direction.SENDRECV) -> SessionDescription:
    """Our offer for an outgoing INVITE: our codecs in our order, telephone-event, 20 ms."""
    codecs = [(_STATIC_PT_BY_CODEC[codec], codec) for codec in local.codecs]
    dtmf = (local.dtmf_payload_type, local.dtmf_events) if local.dtmf_payload_type else None
    return _session(local, [_audio_lines(local, codecs, dtmf, direction, local.rtcp_mux)])


def _offered_audio(offer: SessionDescription) -> tuple[int, MediaDescription]:
    for index, media in enumerate(offer.media):
        if media.media == "audio" and media.port != 0:
            return index, media
    raise ValueError("our offer has no active audio stream")


def process_answer(
    offer: SessionDescription, answer: SessionDescription
) -> NegotiatedMedia | NegotiationFailure:
    """Check a peer's answer against the offer we sent (UAC side of RFC 3264 §6-7).

    The answer may list extra formats (RFC 3264 §6.1 allows formats it can only receive) but
    must contain a codec we offered, and must not re-map a payload type we offered to a
    different codec. The failure's warn-code is for logs and a BYE/CANCEL reason; the status
    field (488) only applies when the answer came in a request we must respond to.
    """
    if len(answer.media) != len(offer.media):
        detail = f"answer has {len(answer.media)} m= lines, offer had {len(offer.media)}"
        return NegotiationFailure(WARN_MEDIA_TYPE, detail)
    index, ours = _offered_audio(offer)
    theirs = answer.media[index]
    if theirs.media != "audio" or theirs.port == 0:
        return NegotiationFailure(WARN_MEDIA_TYPE, "peer rejected the audio stream")
    if theirs.proto.upper() != ours.proto.upper():
        return NegotiationFailure(WARN_TRANSPORT, f"answer changed transport to {theirs.proto}")
    offered: dict[int, Codec] = {}
    for payload_type in ours.payload_types:
        codec = ours.codec_for(payload_type)
        if codec is not None:
            offered[payload_type] = codec
    chosen: tuple[int, Codec] | None = None
    dtmf: int | None = None
    for payload_type in theirs.payload_types:
        codec = theirs.codec_for(payload_type)
        if codec is None:
            continue
        was = offered.get(payload_type)
        if was is not None and was != codec:
            detail = f"answer maps PT {payload_type} to {codec}, we offered {was}"
            return NegotiationFailure(WARN_MEDIA_FORMAT, detail)
        if codec not in offered.values():
            continue  # RFC 3264 §6.1: a format we did not offer; the peer cannot send it
        if chosen is None and codec is not TELEPHONE_EVENT:
            chosen = (payload_type, codec)
        elif dtmf is None and codec is TELEPHONE_EVENT:
            dtmf = payload_type
    if chosen is None:
        detail = f"answer has no codec we offered: {_codec_names(theirs)}"
        return NegotiationFailure(WARN_MEDIA_FORMAT, detail)
    our_connection = offer.effective_connection(ours)
    our_addrtype = our_connection.addrtype if our_connection is not None else "IP4"
    remote = _check_remote(answer, theirs, our_addrtype)
    if isinstance(remote, NegotiationFailure):
        return remote
    ptime = _check_ptime(answer, theirs)
    if isinstance(ptime, NegotiationFailure):
        return ptime
    answered = answer.effective_direction(theirs)
    if remote.on_hold:
        answered = Direction.from_flags(sends=answered.sends, receives=False)
    we_offered = offer.effective_direction(ours)
    # Ours is what we offered, narrowed by what the peer agreed to (RFC 3264 §6.1).
    direction = Direction.from_flags(
        sends=we_offered.sends and answered.receives,
        receives=we_offered.receives and answered.sends,
    )
    mux = theirs.rtcp_mux and ours.rtcp_mux
    rtcp_address, rtcp_port = _rtcp_target(theirs, remote.address, mux)
    our_dtmf = next((pt for pt, c in offered.items() if c is TELEPHONE_EVENT), None)
    return NegotiatedMedia(
        media_index=index,
        remote_address=remote.address,
        remote_port=theirs.port,
        remote_rtcp_address=rtcp_address,
        remote_rtcp_port=rtcp_port,
        rtcp_mux=mux,
        payload_type=chosen[0],
        codec=chosen[1],
        dtmf_payload_type=dtmf,
        dtmf_receive_payload_type=our_dtmf if dtmf is not None else None,
        remote_ptime=ptime,
        direction=direction,
        peer_on_hold=not answered.receives,
    )


class SdpSession:
    """SDP state for one dialog: keeps ``o=`` stable and versions it per RFC 3264 §8.

    RFC 3264 §8: a new SDP keeps the previous ``o=`` line except that the version increments
    by one; an unchanged SDP (a session refresh) keeps the same version. It also keeps the
    m= line count: a stream once offered or answered stays, rejected with port 0.

    ``local`` may be replaced mid-dialog (say, a new RTP port); the next SDP then differs and
    gets the next version. An offer the peer rejected still counts as sent: the following
    offer takes the version after it, which RFC 3264 §8 allows since the peer saw it.
    """

    def __init__(self, local: LocalMedia) -> None:
        self.local = local
        self._last_sent: SessionDescription | None = None
        self._pending_offer: SessionDescription | None = None
        self._audio_index = 0

    @property
    def version(self) -> int | None:
        """Version of the last SDP sent, None before the first."""
        return None if self._last_sent is None else self._last_sent.origin.session_version

    def answer(self, offer: SessionDescription) -> Answer | NegotiationFailure:
        result = negotiate_answer(offer, self.local)
        if isinstance(result, NegotiationFailure):
            return result  # nothing sent, so the version does not move
        self._audio_index = result.media.media_index
        return Answer(self._stamp(result.sdp), result.media)

    def offer(self, direction: Direction = Direction.SENDRECV) -> SessionDescription:
        """An initial offer or a re-offer (hold: ``Direction.SENDONLY``; resume: SENDRECV)."""
        audio = build_offer(self.local, direction).media[0]
        if self._last_sent is None:
            lines = [audio]
        else:
            lines = [
                audio if index == self._audio_index else _rejected(media)
                for index, media in enumerate(self._last_sent.media)
            ]
        sdp = self._stamp(_session(self.local, lines))
        self._pending_offer = sdp
        return sdp

    def process_answer(self, answer: SessionDescription) -> NegotiatedMedia | NegotiationFailure:
        if self._pending_offer is None:
            raise RuntimeError("process_answer() without an outstanding offer")
        offer, self._pending_offer = self._pending_offer, None
        return process_answer(offer, answer)

    def _stamp(self, sdp: SessionDescription) -> SessionDescription:
        previous = self._last_sent
        if previous is None:
            version = self.local.session_version
        elif _same_content(sdp, previous):
            version = previous.origin.session_version
        else:
            version = previous.origin.session_version + 1
        # The o= line is pinned to the first SDP of the dialog, even if ``local`` changes later.
        origin = self.local.origin() if previous is None else previous.origin
        stamped = replace(sdp, origin=replace(origin, session_version=version))
        self._last_sent = stamped
        return stamped


def _same_content(a: SessionDescription, b: SessionDescription) -> bool:
    def unversioned(sdp: SessionDescription) -> SessionDescription:
        return replace(sdp, origin=replace(sdp.origin, session_version=0))

    return unversioned(a) == unversioned(b)
