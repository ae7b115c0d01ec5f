"""The RFC 3261 §17 transaction layer with RFC 6026's Accepted state, sans-I/O.

Why it exists: the asyncio SIP stacks we evaluated fail exactly here: no Timer A, a
retransmitted INVITE turned into a second call, the 100 instead of the latest provisional
re-sent, an INVITE retransmitted after the 2xx taken as a new call. The machines themselves are
tables in `transaction_machines`, and `transaction_table` matches messages to transactions
(§17.1.3, §17.2.3 and the RFC 2543 fallback); this module runs the tables' actions and keeps
the timers.

One `TransactionLayer` owns every transaction of a node. It never reads a clock or a socket:
the I/O layer passes ``now`` into every input, then drains `datagrams_to_send()` and `events()`
and re-arms one timer at `next_deadline()`::

    layer.receive(message, addr, "UDP", loop.time())
    for addr, transport, data in layer.datagrams_to_send(): ...
    for event in layer.events(): ...        # to the TU (UA core, dialogs)
    deadline = layer.next_deadline()        # then on_timer(loop.time()) when it passes

The TU keeps what RFC 6026 gives it: it retransmits its 2xx (`TwoXxRetransmitter`) and sends
the ACK for a 2xx it received (`build_ack_for_2xx`, `send_stateless`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TypeAlias

from edge_media.sip.errors import SipParseError
from edge_media.sip.message import SipRequest, SipResponse, make_response
from edge_media.sip.transaction_client import (
    MAGIC_COOKIE,
    build_ack_for_2xx,
    build_cancel,
    build_non_2xx_ack,
    has_magic_cookie,
)
from edge_media.sip.transaction_machines import (
    NO_TIMERS,
    NOT_ON_ENTRY,
    STATE_TIMERS,
    TABLES,
    TIMEOUT_NAMES,
    TIMERS,
    AckReceived,
    Action,
    CancelReceived,
    Event,
    Input,
    InvalidTransition,
    Machine,
    Outgoing,
    RequestReceived,
    ResponseReceived,
    State,
    StrayAck,
    StrayResponse,
    TransactionError,
    TransactionId,
    TransactionTerminated,
    TransactionTimeout,
    Transition,
    TransportFailed,
    UnknownTransaction,
    transition,
)
from edge_media.sip.transaction_server import (
    AckNotReceived,
    Address,
    Resend2xx,
    TwoXxRetransmitter,
    response_address,
)
from edge_media.sip.transaction_table import Transaction, TransactionTable
from edge_media.sip.transaction_timers import TRYING_DELAY, DeadlineQueue, TimerConfig

__all__ = [
    "TABLES",
    "AckNotReceived",
    "AckReceived",
    "Action",
    "CancelReceived",
    "Event",
    "Input",
    "InvalidTransition",
    "Machine",
    "Outgoing",
    "RequestReceived",
    "Resend2xx",
    "ResponseReceived",
    "State",
    "StrayAck",
    "StrayResponse",
    "TimerConfig",
    "TransactionError",
    "TransactionId",
    "TransactionLayer",
    "TransactionTerminated",
    "TransactionTimeout",
    "Transition",
    "TransportFailed",
    "TwoXxRetransmitter",
    "UnknownTransaction",
    "build_ack_for_2xx",
    "build_cancel",
    "build_non_2xx_ack",
    "transition",
]

# ---------------------------------------------------------------------------------------------
# The layer
# ---------------------------------------------------------------------------------------------
_TimerKey: TypeAlias = tuple[TransactionId, Input]
# Responses as machine inputs, by class: provisional, success, failure (§17.1.1.2, §17.2.1).
_RECEIVED = (Input.PROVISIONAL, Input.SUCCESS, Input.FAILURE)
_SENT = (Input.SEND_PROVISIONAL, Input.SEND_SUCCESS, Input.SEND_FAILURE)


def _status_class(status: int) -> int:
    return 0 if status < 200 else 1 if status < 300 else 2


class TransactionLayer:
    """Every client and server transaction of one node, matched per §17.1.3 and §17.2.3.

    ``new_tag`` supplies random To tags (§19.3) for the answers the layer gives on its own: 200
    to a CANCEL before the TU tagged a response, and 481 to a CANCEL matching nothing.
    ``trying_delay`` is the §17.2.1 policy for INVITEs: send 100 Trying after this many seconds
    unless the TU sent a provisional or final response first (0 sends it at once, None never;
    our UA answers 100 itself at once, so the default only covers a slow TU).
    ``symmetric_responses`` sends every UDP response back to the source address of the request,
    as if it carried ``rport`` (RFC 3581), for peers behind NAT that do not ask for it.
    """

    def __init__(
        self,
        timers: TimerConfig | None = None,
        *,
        new_tag: Callable[[], str],
        trying_delay: float | None = TRYING_DELAY,
        symmetric_responses: bool = False,
    ) -> None:
        self._config = timers if timers is not None else TimerConfig()
        self._new_tag = new_tag
        self._trying_delay = trying_delay
        self._symmetric = symmetric_responses
        self._next_id = 0
        self._table = TransactionTable()
        self._timers: DeadlineQueue[_TimerKey] = DeadlineQueue()
        self._immediate: list[_TimerKey] = []
        self._outgoing: list[Outgoing] = []
        self._events: list[Event] = []

    # -- outputs -------------------------------------------------------------------------------
    def datagrams_to_send(self) -> list[Outgoing]:
        """Everything queued for the network since the last call, in order."""
        outgoing, self._outgoing = self._outgoing, []
        return outgoing

    def events(self) -> list[Event]:
        """Everything for the TU since the last call, in order."""
        events, self._events = self._events, []
        return events

    def next_deadline(self) -> float | None:
        """When `on_timer` must next be called, or None when no timer runs."""
        return self._timers.next_deadline()

    # -- introspection -------------------------------------------------------------------------
    def state(self, txn_id: TransactionId) -> State:
        return self._get(txn_id).state

    def machine(self, txn_id: TransactionId) -> Machine:
        return self._get(txn_id).machine

    def request(self, txn_id: TransactionId) -> SipRequest:
        """The request that created the transaction."""
        return self._get(txn_id).request

    def __contains__(self, txn_id: object) -> bool:
        return txn_id in self._table

    def __len__(self) -> int:
        return len(self._table)

    # -- inputs from the network ---------------------------------------------------------------
    def receive(
        self, message: SipRequest | SipResponse, addr: Address, transport: str, now: float
    ) -> None:
        """Feed one parsed message from ``addr`` (validation per §8.2 and §18 is done before).

        ``transport`` ("udp", "TCP"...) is compared without case and handed back as spelled in
        events and in `datagrams_to_send` for this transaction.
        """
        if isinstance(message, SipResponse):
            self._receive_response(message, addr, transport, now)
        elif message.method == "ACK":
            self._receive_ack(message, addr, transport, now)
        else:
            self._receive_request(message, addr, transport, now)
        self._run_immediate(now)

    def _receive_response(
        self, response: SipResponse, addr: Address, transport: str, now: float
    ) -> None:
        txn = self._table.client_for(response)
        if txn is None:
            self._events.append(StrayResponse(response, addr, transport))
            return
        event = _RECEIVED[_status_class(response.status)]
        self._fire(txn, event, now, response, addr, transport)

    def _receive_ack(self, ack: SipRequest, addr: Address, transport: str, now: float) -> None:
        txn = self._table.ack_target(ack)
        if txn is None or txn.machine is not Machine.INVITE_SERVER:
            self._events.append(StrayAck(ack, addr, transport))
            return
        self._fire(txn, Input.ACK, now, ack, addr, transport)

    def _receive_request(
        self, request: SipRequest, addr: Address, transport: str, now: float
    ) -> None:
        txn = self._table.server_for(request)
        if txn is not None:
            self._fire(txn, Input.REQUEST, now, request, addr, transport)
            return
        machine = Machine.INVITE_SERVER if request.method == "INVITE" else Machine.NON_INVITE_SERVER
        txn = self._new_server(machine, request, addr, transport, now)
        if request.method == "CANCEL":
            self._answer_cancel(txn, now)
        else:
            self._events.append(RequestReceived(txn.id, request, addr, transport))

    def _answer_cancel(self, cancel_txn: Transaction, now: float) -> None:
        """§9.2: find the transaction being cancelled (its method ignored), answer 200 or 481."""
        cancel = cancel_txn.request
        target = self._table.cancel_target(cancel)
        if target is None:
            # §9.2: "If the UAS did not find a matching transaction for the CANCEL according to
            # the procedure above, it SHOULD respond to the CANCEL with a 481".
            answer = make_response(cancel, 481, to_tag=cancel.to_tag or self._new_tag())
            self._fire(cancel_txn, Input.SEND_FAILURE, now, answer)
            return
        to_tag = cancel.to_tag or (target.to_tags[0] if target.to_tags else self._new_tag())
        self._fire(cancel_txn, Input.SEND_SUCCESS, now, make_response(cancel, 200, to_tag=to_tag))
        # "If the UAS has already sent a final response for the original request, the CANCEL
        # request has no effect on the processing of the original request".
        if target.state is State.PROCEEDING or target.state is State.TRYING:
            self._events.append(CancelReceived(target.id, cancel, to_tag))

    # -- inputs from the TU --------------------------------------------------------------------
    def send_request(
        self, request: SipRequest, addr: Address, transport: str, now: float
    ) -> TransactionId:
        """Start a client transaction for ``request`` (not ACK) and send it to ``addr``.

        The request's top Via must carry a fresh branch with the magic cookie (§8.1.1.7); the
        branch and method identify the transaction (§17.1.3).
        """
        if request.method == "ACK":
            raise ValueError(
                "an ACK is not a transaction: the INVITE client transaction sends the one for "
                "300-699, send_stateless the one for a 2xx (§17.1.1.3, §13.2.2.4)"
            )
        try:
            branch = request.top_via.branch
        except SipParseError:
            raise ValueError("the request has no Via header field") from None
        if branch is None or not has_magic_cookie(branch):
            raise ValueError(f"the top Via branch must start with {MAGIC_COOKIE}: {branch!r}")
        key = (branch, request.method)
        if self._table.has_client(key):
            raise TransactionError(f"a client transaction for {key} already exists")
        machine = Machine.INVITE_CLIENT if request.method == "INVITE" else Machine.NON_INVITE_CLIENT
        return self._new_client(machine, request, addr, transport, now).id

    def send_response(
        self, target: TransactionId | SipRequest, response: SipResponse, now: float
    ) -> None:
        """Send the TU's ``response`` on a server transaction, given by id or by its request.

        Raises UnknownTransaction when it is gone and InvalidTransition when the state does not
        allow this response (a 1xx after the final, a second final on an INVITE...).
        """
        if isinstance(target, SipRequest):
            txn = self._find_server(target)
        else:
            txn = self._get(target)
            if not txn.is_server:
                raise TransactionError(f"transaction {target} is a client transaction")
        cseq = response.cseq
        if cseq.method != txn.request.method or cseq.number != txn.request.cseq.number:
            raise ValueError(f"a response with CSeq {cseq} does not answer {txn.request!r}")
        self._fire(txn, _SENT[_status_class(response.status)], now, response)
        self._run_immediate(now)

    def cancel(
        self,
        txn_id: TransactionId,
        now: float,
        *,
        extra_headers: Iterable[tuple[str, str]] = (),
    ) -> TransactionId:
        """CANCEL the INVITE of client transaction ``txn_id`` (§9.1); returns the CANCEL's id.

        Before any provisional response the CANCEL is held ("the client MUST wait for the arrival
        of a provisional response before sending the request"); if a final response comes first
        it is never sent and its TransactionTerminated follows. Once sent, the INVITE transaction
        gives up with TransactionTimeout("cancel") if no final response comes within 64*T1.
        """
        txn = self._get(txn_id)
        if txn.machine is not Machine.INVITE_CLIENT:
            raise TransactionError(f"transaction {txn_id} is not an INVITE client transaction")
        transition(txn.machine, txn.state, Input.CANCEL)  # raises before anything changes
        if txn.cancel is not None:
            raise TransactionError(f"transaction {txn_id} is already being cancelled")
        txn.cancel = build_cancel(txn.request, extra_headers=extra_headers)
        txn.cancel_id = self._allocate_id()
        self._fire(txn, Input.CANCEL, now)
        self._run_immediate(now)
        return txn.cancel_id

    def send_stateless(
        self, message: SipRequest | SipResponse, addr: Address, transport: str
    ) -> None:
        """Queue a message outside any transaction: the ACK for a 2xx (§13.2.2.4), or an
        answer to a request that could not be parsed."""
        self._outgoing.append(Outgoing(addr, transport, message.serialize()))

    def transport_error(self, addr: Address, transport: str, now: float) -> None:
        """The transport failed to reach ``addr``: every transaction sending there whose state
        has a transport-error transition fails (§17.1.4, §17.2.4)."""
        transport = transport.upper()
        for txn in self._table.transactions():
            if (
                txn.destination == addr
                and txn.transport.upper() == transport
                and Input.TRANSPORT_ERROR in TABLES[txn.machine][txn.state]
            ):
                self._fire(txn, Input.TRANSPORT_ERROR, now)
        self._run_immediate(now)

    def on_timer(self, now: float) -> None:
        """Fire every timer due at ``now``, in deadline order."""
        while (key := self._timers.pop_due(now)) is not None:
            self._fire_timer(key, now)
        self._run_immediate(now)

    # -- machinery -----------------------------------------------------------------------------
    def _allocate_id(self) -> TransactionId:
        self._next_id += 1
        return TransactionId(self._next_id)

    def _get(self, txn_id: TransactionId) -> Transaction:
        txn = self._table.get(txn_id)
        if txn is None:
            raise UnknownTransaction(f"no transaction {txn_id}")
        return txn

    def _find_server(self, request: SipRequest) -> Transaction:
        txn = self._table.server_for(request)
        if txn is None:
            raise UnknownTransaction(f"no server transaction for {request!r}")
        return txn

    def _new_client(
        self,
        machine: Machine,
        request: SipRequest,
        addr: Address,
        transport: str,
        now: float,
        txn_id: TransactionId | None = None,
    ) -> Transaction:
        txn = Transaction(
            txn_id if txn_id is not None else self._allocate_id(),
            machine,
            request,
            addr,
            transport,
            addr,
        )
        txn.request_bytes = request.serialize()
        self._table.add_client(txn)
        self._outgoing.append(Outgoing(addr, transport, txn.request_bytes))
        self._enter(txn, frozenset(), now)
        return txn

    def _new_server(
        self, machine: Machine, request: SipRequest, addr: Address, transport: str, now: float
    ) -> Transaction:
        via = request.top_via
        destination = addr if self._symmetric else response_address(via, addr, transport)
        txn = Transaction(self._allocate_id(), machine, request, addr, transport, destination)
        self._table.add_server(txn)
        self._enter(txn, frozenset(), now)
        return txn

    def _duration(self, txn: Transaction, timer: Input) -> float | None:
        config, reliable = self._config, txn.reliable
        if timer in (Input.TIMER_A, Input.TIMER_E, Input.TIMER_G):
            return config.retransmit(reliable)
        if timer is Input.TIMER_D:
            return config.timer_d(reliable)
        if timer is Input.TIMER_I:
            return config.timer_i(reliable)
        if timer is Input.TIMER_J:
            return config.timer_j(reliable)
        if timer is Input.TIMER_K:
            return config.timer_k(reliable)
        if timer is Input.TIMER_TRYING:
            return self._trying_delay
        return config.timeout  # B, F, H, L, M and the CANCEL wait

    def _arm(self, txn: Transaction, timer: Input, duration: float, now: float) -> None:
        key = (txn.id, timer)
        self._timers.set(key, now + duration)
        if duration <= 0:
            # "zero seconds for reliable transports": fire before this input returns.
            self._immediate.append(key)

    def _run_immediate(self, now: float) -> None:
        while self._immediate:
            key = self._immediate.pop(0)
            if key in self._timers:
                self._timers.cancel(key)
                self._fire_timer(key, now)

    def _fire_timer(self, key: _TimerKey, now: float) -> None:
        txn = self._table.get(key[0])
        if txn is not None:
            self._fire(txn, key[1], now)

    def _enter(self, txn: Transaction, before: frozenset[Input], now: float) -> None:
        """Start and stop timers for the state ``txn`` just entered (``before``: the timers of
        the state it left)."""
        allowed = STATE_TIMERS[txn.machine].get(txn.state, NO_TIMERS)
        for timer in before - allowed:
            self._timers.cancel((txn.id, timer))
        for timer in sorted(allowed - before - NOT_ON_ENTRY, key=lambda t: t.value):
            duration = self._duration(txn, timer)
            if duration is not None:
                if timer in (Input.TIMER_A, Input.TIMER_E, Input.TIMER_G):
                    txn.interval = duration
                self._arm(txn, timer, duration, now)

    def _fire(
        self,
        txn: Transaction,
        event: Input,
        now: float,
        message: SipRequest | SipResponse | None = None,
        addr: Address | None = None,
        transport: str | None = None,
    ) -> None:
        """Apply one input: look it up (raising before any change if the table lacks it), run
        its actions in table order, then enter the new state (timers, cleanup)."""
        step = transition(txn.machine, txn.state, event)
        for action in step.actions:
            self._act(action, txn, event, now, message, addr, transport)
        before = txn.state
        txn.state = step.target
        if step.target is before:
            return
        machine_timers = STATE_TIMERS[txn.machine]
        self._enter(txn, machine_timers.get(before, NO_TIMERS), now)
        if step.target is State.TERMINATED:
            self._remove(txn)
        if txn.cancel_id is not None and not txn.cancel_sent:
            # A final response or a timeout came before any 1xx: the CANCEL is never sent.
            self._events.append(TransactionTerminated(txn.cancel_id))
            txn.cancel_id = None

    def _act(
        self,
        action: Action,
        txn: Transaction,
        event: Input,
        now: float,
        message: SipRequest | SipResponse | None,
        addr: Address | None,
        transport: str | None,
    ) -> None:
        if action is Action.TO_TU:
            assert isinstance(message, SipResponse)
            self._events.append(ResponseReceived(txn.id, message))
        elif action is Action.SEND or action is Action.SEND_TRYING:
            response = message if action is Action.SEND else make_response(txn.request, 100)
            assert isinstance(response, SipResponse)
            self._send_response(txn, response)
        elif action is Action.RESEND:
            if txn.last_response is not None:
                self._outgoing.append(Outgoing(txn.destination, txn.transport, txn.last_response))
        elif action is Action.RETRANSMIT:
            self._retransmit(txn, event, now)
        elif action is Action.SEND_ACK:
            if txn.ack is None:
                assert isinstance(message, SipResponse)
                txn.ack = build_non_2xx_ack(txn.request, message).serialize()
            # §17.1.1.3: "sent to the same address, port, and transport" as the INVITE.
            self._outgoing.append(Outgoing(txn.addr, txn.transport, txn.ack))
        elif action is Action.SEND_CANCEL:
            self._send_cancel(txn, now)
        elif action is Action.ACK_TO_TU:
            assert isinstance(message, SipRequest) and addr is not None and transport is not None
            self._events.append(AckReceived(txn.id, message, addr, transport))
        elif action is Action.TIMEOUT:
            self._events.append(TransactionTimeout(txn.id, TIMEOUT_NAMES[event]))
        elif action is Action.TRANSPORT_FAILED:
            self._events.append(TransportFailed(txn.id))
        else:  # Action.STRAY
            assert addr is not None and transport is not None
            if isinstance(message, SipResponse):
                self._events.append(StrayResponse(message, addr, transport))
            elif isinstance(message, SipRequest):
                self._events.append(StrayAck(message, addr, transport))

    def _send_response(self, txn: Transaction, response: SipResponse) -> None:
        data = response.serialize()
        txn.last_response = data
        self._outgoing.append(Outgoing(txn.destination, txn.transport, data))
        if response.status < 200:
            # §17.2.1: the TU answered in time, no 100 from us.
            self._timers.cancel((txn.id, Input.TIMER_TRYING))
        to_tag = response.to_tag
        if to_tag is not None and to_tag not in txn.to_tags:
            txn.to_tags.append(to_tag)
        if txn.machine is Machine.INVITE_SERVER and 200 <= response.status < 300:
            self._table.accept(txn, to_tag)

    def _retransmit(self, txn: Transaction, event: Input, now: float) -> None:
        t2 = self._config.t2
        if event is Input.TIMER_A:
            # §17.1.1.2: "reset the timer with a value of 2*T1", doubling each time, no cap.
            txn.interval *= 2
            data = txn.request_bytes
        elif event is Input.TIMER_E:
            # §17.1.2.2: doubling up to T2 in Trying, T2 in Proceeding.
            txn.interval = t2 if txn.state is State.PROCEEDING else min(2 * txn.interval, t2)
            data = txn.request_bytes
        else:
            # Timer G, §17.2.1: "reset the timer with a value of min(2*T1, T2)", and so on.
            txn.interval = min(2 * txn.interval, t2)
            assert txn.last_response is not None  # Completed is entered by sending it
            data = txn.last_response
        self._outgoing.append(Outgoing(txn.destination, txn.transport, data))
        self._arm(txn, event, txn.interval, now)

    def _send_cancel(self, txn: Transaction, now: float) -> None:
        if txn.cancel is None or txn.cancel_sent or txn.cancel_id is None:
            return
        txn.cancel_sent = True
        # §9.1: "The destination address, port, and transport for the CANCEL MUST be identical
        # to those used to send the original request."
        self._new_client(
            Machine.NON_INVITE_CLIENT, txn.cancel, txn.addr, txn.transport, now, txn.cancel_id
        )
        # §9.1: "If there is no final response for the original request in 64*T1 seconds ...
        # the client SHOULD then consider the original transaction cancelled".
        self._arm(txn, Input.TIMER_CANCEL, self._config.timeout, now)

    def _remove(self, txn: Transaction) -> None:
        for timer in TIMERS:
            self._timers.cancel((txn.id, timer))
        self._table.remove(txn)
        self._events.append(TransactionTerminated(txn.id))
