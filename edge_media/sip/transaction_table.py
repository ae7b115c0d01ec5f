"""Which transaction a message belongs to: every live transaction of a node and its match keys.

Why apart from `transaction`: matching (§17.1.3 for responses, §17.2.3 for requests with the
RFC 2543 fallback, §9.2 for CANCEL, and RFC 6026's ACK for a 2xx matched by dialog) is a set of
lookups that never depends on a machine's state or a timer, while `TransactionLayer` runs the
machines. The layer asks this table and owns everything else about a transaction.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeAlias

from edge_media.sip.message import SipRequest, SipResponse
from edge_media.sip.transaction_machines import INITIAL_STATE, Machine, TransactionId
from edge_media.sip.transaction_server import (
    Address,
    BranchKey,
    LegacyKey,
    branch_key,
    legacy_key,
)
from edge_media.sip.transaction_timers import is_reliable

__all__ = ["Transaction", "TransactionTable"]

# ACK for a 2xx carries a new branch (§13.2.2.4), so it is matched to the INVITE server
# transaction in Accepted by dialog: Call-ID, From tag, To tag of our 2xx, CSeq number.
DialogKey: TypeAlias = tuple[str, str | None, str | None, int]


class Transaction:
    """One transaction's mutable state; only the layer and this table touch it."""

    __slots__ = ("ack", "addr", "cancel", "cancel_id", "cancel_sent", "client_key", "destination",
                 "dialog_keys", "id", "interval", "last_response", "legacy_key", "machine",
                 "reliable", "request", "request_bytes", "server_key", "state", "to_tags",
                 "transport")  # fmt: skip

    def __init__(
        self,
        txn_id: TransactionId,
        machine: Machine,
        request: SipRequest,
        addr: Address,
        transport: str,
        destination: Address,
    ) -> None:
        self.id = txn_id
        self.machine = machine
        self.state = INITIAL_STATE[machine]
        self.request = request
        self.addr = addr  # where the request went (client) or came from (server)
        self.transport = transport
        self.destination = destination  # where this transaction sends (§18.1.1, §18.2.2)
        self.reliable = is_reliable(transport)
        self.request_bytes = b""
        self.interval = 0.0  # current Timer A, E or G interval
        self.last_response: bytes | None = None
        self.ack: bytes | None = None
        self.client_key: tuple[str, str] | None = None  # (branch, method), §17.1.3
        self.server_key: BranchKey | None = None  # §17.2.3 with the magic cookie
        self.legacy_key: LegacyKey | None = None  # §17.2.3 without it (RFC 2543)
        self.to_tags: list[str] = []
        self.dialog_keys: list[DialogKey] = []
        self.cancel: SipRequest | None = None
        self.cancel_id: TransactionId | None = None
        self.cancel_sent = False

    @property
    def is_server(self) -> bool:
        return self.machine in (Machine.INVITE_SERVER, Machine.NON_INVITE_SERVER)


class TransactionTable:
    """Every live transaction by id, and by the keys incoming messages are matched with."""

    def __init__(self) -> None:
        self._txns: dict[TransactionId, Transaction] = {}
        self._client: dict[tuple[str, str], Transaction] = {}
        self._server: dict[BranchKey, Transaction] = {}
        self._legacy: dict[LegacyKey, list[Transaction]] = {}
        self._accepted: dict[DialogKey, Transaction] = {}

    def __contains__(self, txn_id: object) -> bool:
        return txn_id in self._txns

    def __len__(self) -> int:
        return len(self._txns)

    def get(self, txn_id: TransactionId) -> Transaction | None:
        return self._txns.get(txn_id)

    def transactions(self) -> list[Transaction]:
        """A snapshot, so that the caller may end transactions while going through it."""
        return list(self._txns.values())

    # -- adding and removing -------------------------------------------------------------------

    def has_client(self, key: tuple[str, str]) -> bool:
        return key in self._client

    def add_client(self, txn: Transaction) -> None:
        key = (txn.request.top_via.branch or "", txn.request.method)
        txn.client_key = key
        self._client[key] = txn
        self._txns[txn.id] = txn

    def add_server(self, txn: Transaction) -> None:
        key = branch_key(txn.request)
        if key is not None:
            txn.server_key = key
            self._server[key] = txn
        else:
            txn.legacy_key = legacy_key(txn.request)
            self._legacy.setdefault(txn.legacy_key, []).append(txn)
        self._txns[txn.id] = txn

    def accept(self, txn: Transaction, to_tag: str | None) -> None:
        """Our 2xx with ``to_tag`` went out on INVITE server ``txn``: match its ACK by dialog."""
        request = txn.request
        dialog = (request.call_id, request.from_tag, to_tag, request.cseq.number)
        if dialog not in self._accepted:
            self._accepted[dialog] = txn
            txn.dialog_keys.append(dialog)

    def remove(self, txn: Transaction) -> None:
        del self._txns[txn.id]
        if txn.legacy_key is not None:
            siblings = self._legacy[txn.legacy_key]
            siblings.remove(txn)
            if not siblings:
                del self._legacy[txn.legacy_key]
        if txn.server_key is not None:
            del self._server[txn.server_key]
        if txn.client_key is not None:
            del self._client[txn.client_key]
        for dialog in txn.dialog_keys:
            self._accepted.pop(dialog, None)

    # -- matching ------------------------------------------------------------------------------

    def client_for(self, response: SipResponse) -> Transaction | None:
        """§17.1.3: the top Via branch and the CSeq method select the client transaction."""
        branch = response.top_via.branch
        return None if branch is None else self._client.get((branch, response.cseq.method))

    def server_for(self, request: SipRequest) -> Transaction | None:
        """§17.2.3: the server transaction a request (not ACK, not CANCEL's target) belongs to."""
        key = branch_key(request)
        if key is not None:
            return self._server.get(key)
        return self._find_legacy(request, lambda t: t.request.method == request.method)

    def ack_target(self, ack: SipRequest) -> Transaction | None:
        """The transaction an ACK belongs to: by §17.2.3, else by dialog (a 2xx's ACK)."""
        key = branch_key(ack)
        txn = self._server.get(key) if key is not None else self._find_legacy_ack(ack)
        if txn is None:
            dialog = (ack.call_id, ack.from_tag, ack.to_tag, ack.cseq.number)
            txn = self._accepted.get(dialog)
        return txn

    def cancel_target(self, cancel: SipRequest) -> Transaction | None:
        """§9.2: the transaction a CANCEL cancels, matched as §17.2.3 with its method ignored."""
        key = branch_key(cancel, "INVITE")
        if key is not None:
            return self._server.get(key)
        return self._find_legacy(cancel, lambda t: t.request.method != "CANCEL")

    def _find_legacy(
        self, request: SipRequest, accept: Callable[[Transaction], bool]
    ) -> Transaction | None:
        """§17.2.3 for branches without the magic cookie: "the Request-URI, To tag, From tag,
        Call-ID, CSeq, and top Via header field match those of the request"."""
        to_tag = request.to_tag
        for txn in self._legacy.get(legacy_key(request), ()):
            if txn.request.to_tag == to_tag and accept(txn):
                return txn
        return None

    def _find_legacy_ack(self, ack: SipRequest) -> Transaction | None:
        """§17.2.3: "The ACK request matches a transaction if the Request-URI, From tag, Call-ID,
        CSeq number (not the method), and top Via header field match those of the INVITE request
        which created the transaction, and the To tag of the ACK matches the To tag of the
        response sent by the server transaction"."""
        for txn in self._legacy.get(legacy_key(ack), ()):
            if txn.machine is Machine.INVITE_SERVER and ack.to_tag in txn.to_tags:
                return txn
        return None
