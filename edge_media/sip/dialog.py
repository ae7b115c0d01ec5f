"""SIP dialogs (RFC 3261 §12), sans-I/O: state, in-dialog requests, route sets, matching.

A dialog is what lets a BYE, re-INVITE or REFER reach the right peer through the right proxies: the
remote target (the peer's Contact), the route set (Record-Route, in the order our requests must
visit it), both tags and both CSeq counters. Getting it wrong is the classic "BYE never reaches the
carrier" bug behind an SBC, so the rules are quoted beside the code.

Both roles share one class: a UAS builds it from the INVITE it answers (§12.1.1), a UAC from the
response to its INVITE (§12.1.2). Randomness (tags, branches) and the initial CSeq come from the
caller, so this module is deterministic under test.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum

from edge_media.sip.header_values import NameAddr, Via
from edge_media.sip.message import SipRequest, SipResponse
from edge_media.sip.uri import SipUri, Uri

# §12.2.1.1: ACK and CANCEL reuse the INVITE's CSeq number; every other request takes the next one.
_SAME_CSEQ_METHODS = frozenset({"ACK", "CANCEL"})
# Requests that refresh the remote target when they (or their 2xx) carry a Contact (§12.2, RFC 3311).
TARGET_REFRESH_METHODS = frozenset({"INVITE", "UPDATE", "SUBSCRIBE", "NOTIFY", "REFER"})


class DialogError(Exception):
    """A request or response cannot belong to (or create) a dialog; ``status`` is the answer."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason


class DialogState(StrEnum):
    EARLY = "early"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


@dataclass(frozen=True, slots=True)
class DialogId:
    """§12: Call-ID plus the local and remote tags, from our point of view."""

    call_id: str
    local_tag: str
    remote_tag: str

    @classmethod
    def of_incoming_request(cls, request: SipRequest) -> DialogId | None:
        """The dialog an incoming request claims: its To tag is ours, its From tag theirs."""
        if request.to_tag is None or request.from_tag is None:
            return None
        return cls(request.call_id, request.to_tag, request.from_tag)

    @classmethod
    def of_incoming_response(cls, response: SipResponse) -> DialogId | None:
        """The dialog a response to our request belongs to: From tag ours, To tag theirs."""
        if response.to_tag is None or response.from_tag is None:
            return None
        return cls(response.call_id, response.from_tag, response.to_tag)


def _target_of(message: SipRequest | SipResponse, what: str) -> Uri:
    contacts = message.contacts
    if contacts == "*" or not contacts:
        raise DialogError(400, f"Missing Contact in {what}")
    return contacts[0].uri


@dataclass
class Dialog:
    call_id: str
    local: NameAddr  # our From (UAC) or To (UAS) with our tag
    remote: NameAddr  # the peer's, with its tag
    remote_target: Uri
    route_set: tuple[NameAddr, ...]
    local_seq: int
    remote_seq: int | None
    is_uac: bool
    secure: bool = False
    state: DialogState = DialogState.EARLY
    extra: dict[str, object] = field(default_factory=dict)

    # ------------------------------------------------------------------ creation

    @classmethod
    def as_uas(
        cls, request: SipRequest, local_tag: str, local_seq: int, *, early: bool = True
    ) -> Dialog:
        """§12.1.1: the dialog a UAS creates when it answers ``request`` with a 1xx/2xx.

        "The route set MUST be set to the list of URIs in the Record-Route header field from the
        request, taken in order and preserving all URI parameters." The remote target is the
        request's Contact; the remote sequence number its CSeq.
        """
        if request.from_tag is None:
            raise DialogError(400, "Missing From tag")
        return cls(
            call_id=request.call_id,
            local=request.to.with_tag(local_tag),
            remote=request.from_,
            remote_target=_target_of(request, request.method),
            route_set=request.record_route,
            local_seq=local_seq,
            remote_seq=request.cseq.number,
            is_uac=False,
            secure=isinstance(request.uri, SipUri) and request.uri.is_secure,
            state=DialogState.EARLY if early else DialogState.CONFIRMED,
        )

    @classmethod
    def as_uac(cls, request: SipRequest, response: SipResponse) -> Dialog:
        """§12.1.2: the dialog a UAC creates from a 1xx (with To tag) or 2xx to its request.

        "The route set MUST be set to the list of URIs in the Record-Route header field from the
        response, taken in reverse order."
        """
        if response.to_tag is None:
            raise DialogError(400, "Missing To tag in response")
        return cls(
            call_id=request.call_id,
            local=request.from_,
            remote=response.to,
            remote_target=_target_of(response, f"{response.status} response"),
            route_set=tuple(reversed(response.record_route)),
            local_seq=request.cseq.number,
            remote_seq=None,
            is_uac=True,
            secure=isinstance(request.uri, SipUri) and request.uri.is_secure,
            state=DialogState.CONFIRMED if 200 <= response.status < 300 else DialogState.EARLY,
        )

    @property
    def id(self) -> DialogId:
        local_tag = self.local.tag
        remote_tag = self.remote.tag
        assert local_tag is not None and remote_tag is not None  # guaranteed by the constructors
        return DialogId(self.call_id, local_tag, remote_tag)

    # ------------------------------------------------------------------ state

    def confirm_with(self, response: SipResponse) -> None:
        """An early UAC dialog becomes confirmed by the 2xx; §12.1.2 recomputes the route set."""
        if self.state is DialogState.EARLY and self.is_uac:
            self.route_set = tuple(reversed(response.record_route))
        self.state = DialogState.CONFIRMED
        self.refresh_target(response)

    def confirm(self) -> None:
        self.state = DialogState.CONFIRMED

    def terminate(self) -> None:
        self.state = DialogState.TERMINATED

    def refresh_target(self, message: SipRequest | SipResponse) -> None:
        """§12.2.1.2 / §12.2.2: a target refresh request or its 2xx may move the remote target."""
        contacts = message.contacts
        if contacts != "*" and contacts:
            self.remote_target = contacts[0].uri

    def receive_request(self, request: SipRequest) -> None:
        """§12.2.2: check and record the remote CSeq of an in-dialog request.

        "If the remote sequence number was not empty, but the sequence number of the request is
        lower than the remote sequence number, the request is out of order and MUST be rejected
        with a 500 (Server Internal Error) response." ACK and CANCEL carry the INVITE's number and
        are exempt.
        """
        number = request.cseq.number
        if request.method in _SAME_CSEQ_METHODS:
            return
        if self.remote_seq is not None and number < self.remote_seq:
            raise DialogError(500, "CSeq out of order")
        if self.remote_seq is not None and number == self.remote_seq:
            raise DialogError(500, "CSeq already used")
        self.remote_seq = number

    # ------------------------------------------------------------------ requests

    def next_hop(self) -> Uri:
        """Where an in-dialog request is sent: the first route if any, else the remote target."""
        return self.route_set[0].uri if self.route_set else self.remote_target

    def _request_uri_and_routes(self) -> tuple[Uri, tuple[NameAddr, ...]]:
        """§12.2.1.1: loose routing keeps the target in the Request-URI; strict routing does not.

        "If the route set is not empty, and the first URI in the route set contains the lr
        parameter, the UAC MUST place the remote target URI into the Request-URI and MUST include
        a Route header field containing the route set values in order." Otherwise (a strict
        router, RFC 2543 style) the first route becomes the Request-URI, and the remote target is
        appended to the remaining routes.
        """
        if not self.route_set:
            return self.remote_target, ()
        first = self.route_set[0].uri
        if isinstance(first, SipUri) and "lr" in first.params:
            return self.remote_target, self.route_set
        return first, (*self.route_set[1:], NameAddr(self.remote_target))

    def create_request(
        self,
        method: str,
        *,
        via: Via | str,
        contact: NameAddr | str | None = None,
        cseq: int | None = None,
        body: bytes = b"",
        content_type: str | None = None,
        extra_headers: Iterable[tuple[str, str]] = (),
    ) -> SipRequest:
        """Build an in-dialog request (§12.2.1.1). ``via`` carries the new branch.

        ACK for a 2xx and CANCEL pass the INVITE's ``cseq``; other methods take the next local
        sequence number, which this call consumes.
        """
        if self.state is DialogState.TERMINATED and method not in _SAME_CSEQ_METHODS:
            raise DialogError(481, "Dialog terminated")
        if cseq is None:
            if method in _SAME_CSEQ_METHODS:
                raise ValueError(f"{method} needs the INVITE's CSeq number")
            self.local_seq += 1
            cseq = self.local_seq
        request_uri, routes = self._request_uri_and_routes()
        headers = [("Route", str(route)) for route in routes]
        headers.extend(extra_headers)
        return SipRequest.build(
            method,
            request_uri,
            from_=self.local,
            to=self.remote,
            call_id=self.call_id,
            cseq=cseq,
            via=via,
            contact=contact,
            extra_headers=headers,
            body=body,
            content_type=content_type,
        )


class DialogTable:
    """The dialogs of a UA, found by the tags of an incoming request or response."""

    def __init__(self) -> None:
        self._dialogs: dict[DialogId, Dialog] = {}

    def add(self, dialog: Dialog) -> None:
        self._dialogs[dialog.id] = dialog

    def remove(self, dialog: Dialog) -> None:
        self._dialogs.pop(dialog.id, None)

    def for_request(self, request: SipRequest) -> Dialog | None:
        dialog_id = DialogId.of_incoming_request(request)
        return self._dialogs.get(dialog_id) if dialog_id else None

    def for_response(self, response: SipResponse) -> Dialog | None:
        dialog_id = DialogId.of_incoming_response(response)
        return self._dialogs.get(dialog_id) if dialog_id else None

    def __len__(self) -> int:
        return len(self._dialogs)

    def __iter__(self) -> Iterator[Dialog]:
        return iter(list(self._dialogs.values()))
