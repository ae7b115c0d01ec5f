"""The four RFC 3261 §17 transaction machines as data, with RFC 6026's Accepted state.

Why data: like h11's ``_state.py``, every transition lives in one table per machine (state, then
input, giving the next state and the actions), so each can be checked line by line against the
RFC figures and a test can walk all of them. Nothing here acts: `TransactionLayer` looks an
input up with `transition`, performs the actions and starts or stops the timers `STATE_TIMERS`
lists. An input a machine does not allow raises `InvalidTransition` before anything changes.

The events the layer reports to the TU are defined here too, so the vocabulary of the layer can
be read in one place.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final, NamedTuple, NewType, TypeAlias

from edge_media.sip.message import SipRequest, SipResponse
from edge_media.sip.transaction_server import Address

__all__ = [
    "INITIAL_STATE",
    "STATE_TIMERS",
    "TABLES",
    "AckReceived",
    "Action",
    "CancelReceived",
    "Event",
    "Input",
    "InvalidTransition",
    "Machine",
    "Outgoing",
    "RequestReceived",
    "ResponseReceived",
    "State",
    "StrayAck",
    "StrayResponse",
    "TransactionError",
    "TransactionId",
    "TransactionTerminated",
    "TransactionTimeout",
    "Transition",
    "TransportFailed",
    "UnknownTransaction",
    "transition",
]

TransactionId = NewType("TransactionId", int)


# ---------------------------------------------------------------------------------------------
# Errors: caller misuse only. Whatever a peer sends is absorbed or reported as an event.
# ---------------------------------------------------------------------------------------------
class TransactionError(Exception):
    """The TU asked for something the transaction layer cannot do."""


class InvalidTransition(TransactionError):
    """The input is not allowed in the machine's current state; nothing was changed."""

    def __init__(self, machine: Machine, state: State, event: Input) -> None:
        super().__init__(f"{machine.value}: {event.value} is not allowed in state {state.value}")
        self.machine = machine
        self.state = state
        self.event = event


class UnknownTransaction(TransactionError):
    """No live transaction has this id (it never existed or has terminated)."""


# ---------------------------------------------------------------------------------------------
# The four machines as data
# ---------------------------------------------------------------------------------------------
class Machine(enum.Enum):
    INVITE_CLIENT = "INVITE client"  # §17.1.1, Figure 5 with RFC 6026 §8.4
    NON_INVITE_CLIENT = "non-INVITE client"  # §17.1.2, Figure 6
    INVITE_SERVER = "INVITE server"  # §17.2.1, Figure 7 with RFC 6026 §7.1
    NON_INVITE_SERVER = "non-INVITE server"  # §17.2.2, Figure 8


class State(enum.Enum):
    CALLING = "Calling"
    TRYING = "Trying"
    PROCEEDING = "Proceeding"
    COMPLETED = "Completed"
    CONFIRMED = "Confirmed"
    ACCEPTED = "Accepted"
    TERMINATED = "Terminated"


class Input(enum.Enum):
    # from the network
    PROVISIONAL = "1xx received"
    SUCCESS = "2xx received"
    FAILURE = "300-699 received"
    REQUEST = "request retransmission"
    ACK = "ACK received"
    # from the TU
    SEND_PROVISIONAL = "1xx from TU"
    SEND_SUCCESS = "2xx from TU"
    SEND_FAILURE = "300-699 from TU"
    CANCEL = "CANCEL from TU"
    # timers (Table 4 and RFC 6026 §8.4), and two of our own
    TIMER_A = "Timer A"
    TIMER_B = "Timer B"
    TIMER_D = "Timer D"
    TIMER_E = "Timer E"
    TIMER_F = "Timer F"
    TIMER_G = "Timer G"
    TIMER_H = "Timer H"
    TIMER_I = "Timer I"
    TIMER_J = "Timer J"
    TIMER_K = "Timer K"
    TIMER_L = "Timer L"
    TIMER_M = "Timer M"
    TIMER_TRYING = "100 Trying due"  # §17.2.1, 200 ms without a TU response
    TIMER_CANCEL = "no final 64*T1 after CANCEL"  # §9.1
    TRANSPORT_ERROR = "transport error"


class Action(enum.Enum):
    TO_TU = "pass the response to the TU"
    RETRANSMIT = "send the request (client) or final response (server) again, restart the timer"
    SEND_ACK = "send the ACK for the 300-699 (built on first use, §17.1.1.3)"
    SEND = "send the TU's response"
    RESEND = "send the latest response again, if there is one"
    SEND_TRYING = "send 100 Trying"
    SEND_CANCEL = "send the CANCEL the TU asked for, if any (§9.1 waits for a 1xx)"
    ACK_TO_TU = "pass the ACK to the TU"
    TIMEOUT = "tell the TU the transaction timed out"
    TRANSPORT_FAILED = "tell the TU the transport failed"
    STRAY = "report the message as stray, for logging"


@dataclass(frozen=True, slots=True)
class Transition:
    target: State
    actions: tuple[Action, ...] = ()


def _t(target: State, *actions: Action) -> Transition:
    return Transition(target, actions)


# Figure 5 with RFC 6026 Figure 3. A 2xx goes to Accepted, not Terminated, so its
# retransmissions and the 2xx of other forks still reach the TU (RFC 6026 §8.4). The 1xx and
# finals not in the figure are late or duplicate datagrams: absorbed (or logged when odd).
_INVITE_CLIENT: dict[State, dict[Input, Transition]] = {
    State.CALLING: {
        Input.PROVISIONAL: _t(State.PROCEEDING, Action.TO_TU, Action.SEND_CANCEL),
        Input.SUCCESS: _t(State.ACCEPTED, Action.TO_TU),
        Input.FAILURE: _t(State.COMPLETED, Action.SEND_ACK, Action.TO_TU),
        Input.TIMER_A: _t(State.CALLING, Action.RETRANSMIT),
        Input.TIMER_B: _t(State.TERMINATED, Action.TIMEOUT),
        Input.TRANSPORT_ERROR: _t(State.TERMINATED, Action.TRANSPORT_FAILED),
        Input.CANCEL: _t(State.CALLING),  # §9.1: held until a provisional response arrives
    },
    State.PROCEEDING: {
        Input.PROVISIONAL: _t(State.PROCEEDING, Action.TO_TU),
        Input.SUCCESS: _t(State.ACCEPTED, Action.TO_TU),
        Input.FAILURE: _t(State.COMPLETED, Action.SEND_ACK, Action.TO_TU),
        Input.CANCEL: _t(State.PROCEEDING, Action.SEND_CANCEL),
        Input.TIMER_CANCEL: _t(State.TERMINATED, Action.TIMEOUT),
    },
    State.COMPLETED: {
        Input.FAILURE: _t(State.COMPLETED, Action.SEND_ACK),
        Input.PROVISIONAL: _t(State.COMPLETED),
        Input.SUCCESS: _t(State.COMPLETED, Action.STRAY),
        Input.TIMER_D: _t(State.TERMINATED),
        Input.TRANSPORT_ERROR: _t(State.TERMINATED, Action.TRANSPORT_FAILED),
    },
    State.ACCEPTED: {
        Input.SUCCESS: _t(State.ACCEPTED, Action.TO_TU),
        Input.PROVISIONAL: _t(State.ACCEPTED),
        Input.FAILURE: _t(State.ACCEPTED, Action.STRAY),
        Input.TIMER_M: _t(State.TERMINATED),
    },
    State.TERMINATED: {},
}

# Figure 6. In Completed every response is a retransmission and is absorbed (§17.1.2.2).
_NON_INVITE_CLIENT: dict[State, dict[Input, Transition]] = {
    State.TRYING: {
        Input.PROVISIONAL: _t(State.PROCEEDING, Action.TO_TU),
        Input.SUCCESS: _t(State.COMPLETED, Action.TO_TU),
        Input.FAILURE: _t(State.COMPLETED, Action.TO_TU),
        Input.TIMER_E: _t(State.TRYING, Action.RETRANSMIT),
        Input.TIMER_F: _t(State.TERMINATED, Action.TIMEOUT),
        Input.TRANSPORT_ERROR: _t(State.TERMINATED, Action.TRANSPORT_FAILED),
    },
    State.PROCEEDING: {
        Input.PROVISIONAL: _t(State.PROCEEDING, Action.TO_TU),
        Input.SUCCESS: _t(State.COMPLETED, Action.TO_TU),
        Input.FAILURE: _t(State.COMPLETED, Action.TO_TU),
        Input.TIMER_E: _t(State.PROCEEDING, Action.RETRANSMIT),
        Input.TIMER_F: _t(State.TERMINATED, Action.TIMEOUT),
        Input.TRANSPORT_ERROR: _t(State.TERMINATED, Action.TRANSPORT_FAILED),
    },
    State.COMPLETED: {
        Input.PROVISIONAL: _t(State.COMPLETED),
        Input.SUCCESS: _t(State.COMPLETED),
        Input.FAILURE: _t(State.COMPLETED),
        Input.TIMER_K: _t(State.TERMINATED),
    },
    State.TERMINATED: {},
}

# Figure 7 with RFC 6026 Figure 5: a 2xx from the TU leads to Accepted, where INVITE
# retransmissions are absorbed (never a second call) and ACKs go to the TU.
_INVITE_SERVER: dict[State, dict[Input, Transition]] = {
    State.PROCEEDING: {
        Input.REQUEST: _t(State.PROCEEDING, Action.RESEND),  # the LATEST provisional (§17.2.1)
        Input.TIMER_TRYING: _t(State.PROCEEDING, Action.SEND_TRYING),
        Input.SEND_PROVISIONAL: _t(State.PROCEEDING, Action.SEND),
        Input.SEND_SUCCESS: _t(State.ACCEPTED, Action.SEND),
        Input.SEND_FAILURE: _t(State.COMPLETED, Action.SEND),
        Input.TRANSPORT_ERROR: _t(State.TERMINATED, Action.TRANSPORT_FAILED),
        Input.ACK: _t(State.PROCEEDING, Action.STRAY),  # nothing final to acknowledge yet
    },
    State.COMPLETED: {
        Input.REQUEST: _t(State.COMPLETED, Action.RESEND),
        Input.TIMER_G: _t(State.COMPLETED, Action.RETRANSMIT),
        Input.TIMER_H: _t(State.TERMINATED, Action.TIMEOUT),
        Input.ACK: _t(State.CONFIRMED),
        Input.TRANSPORT_ERROR: _t(State.TERMINATED, Action.TRANSPORT_FAILED),
    },
    State.CONFIRMED: {
        Input.ACK: _t(State.CONFIRMED),
        Input.REQUEST: _t(State.CONFIRMED),
        Input.TIMER_I: _t(State.TERMINATED),
    },
    State.ACCEPTED: {
        Input.REQUEST: _t(State.ACCEPTED),
        Input.ACK: _t(State.ACCEPTED, Action.ACK_TO_TU),
        Input.SEND_SUCCESS: _t(State.ACCEPTED, Action.SEND),
        Input.TRANSPORT_ERROR: _t(State.ACCEPTED, Action.TRANSPORT_FAILED),
        Input.TIMER_L: _t(State.TERMINATED),
    },
    State.TERMINATED: {},
}

# Figure 8. "Any other final responses passed by the TU to the server transaction MUST be
# discarded while in the Completed state" (§17.2.2), so they are allowed and do nothing.
_NON_INVITE_SERVER: dict[State, dict[Input, Transition]] = {
    State.TRYING: {
        Input.REQUEST: _t(State.TRYING),
        Input.SEND_PROVISIONAL: _t(State.PROCEEDING, Action.SEND),
        Input.SEND_SUCCESS: _t(State.COMPLETED, Action.SEND),
        Input.SEND_FAILURE: _t(State.COMPLETED, Action.SEND),
    },
    State.PROCEEDING: {
        Input.REQUEST: _t(State.PROCEEDING, Action.RESEND),
        Input.SEND_PROVISIONAL: _t(State.PROCEEDING, Action.SEND),
        Input.SEND_SUCCESS: _t(State.COMPLETED, Action.SEND),
        Input.SEND_FAILURE: _t(State.COMPLETED, Action.SEND),
        Input.TRANSPORT_ERROR: _t(State.TERMINATED, Action.TRANSPORT_FAILED),
    },
    State.COMPLETED: {
        Input.REQUEST: _t(State.COMPLETED, Action.RESEND),
        Input.SEND_SUCCESS: _t(State.COMPLETED),
        Input.SEND_FAILURE: _t(State.COMPLETED),
        Input.TIMER_J: _t(State.TERMINATED),
        Input.TRANSPORT_ERROR: _t(State.TERMINATED, Action.TRANSPORT_FAILED),
    },
    State.TERMINATED: {},
}

TABLES: Final[dict[Machine, dict[State, dict[Input, Transition]]]] = {
    Machine.INVITE_CLIENT: _INVITE_CLIENT,
    Machine.NON_INVITE_CLIENT: _NON_INVITE_CLIENT,
    Machine.INVITE_SERVER: _INVITE_SERVER,
    Machine.NON_INVITE_SERVER: _NON_INVITE_SERVER,
}

INITIAL_STATE: Final = {
    Machine.INVITE_CLIENT: State.CALLING,
    Machine.NON_INVITE_CLIENT: State.TRYING,
    Machine.INVITE_SERVER: State.PROCEEDING,
    Machine.NON_INVITE_SERVER: State.TRYING,
}

# Timers that may run in each state. Entering a state starts the ones the previous state did
# not have and stops the ones the new state does not have; Timer E keeps running from Trying
# into Proceeding (§17.1.2.2). The CANCEL timer is started by SEND_CANCEL, never on entry.
STATE_TIMERS: Final[dict[Machine, dict[State, frozenset[Input]]]] = {
    Machine.INVITE_CLIENT: {
        State.CALLING: frozenset({Input.TIMER_A, Input.TIMER_B}),
        State.PROCEEDING: frozenset({Input.TIMER_CANCEL}),
        State.COMPLETED: frozenset({Input.TIMER_D}),
        State.ACCEPTED: frozenset({Input.TIMER_M}),
    },
    Machine.NON_INVITE_CLIENT: {
        State.TRYING: frozenset({Input.TIMER_E, Input.TIMER_F}),
        State.PROCEEDING: frozenset({Input.TIMER_E, Input.TIMER_F}),
        State.COMPLETED: frozenset({Input.TIMER_K}),
    },
    Machine.INVITE_SERVER: {
        State.PROCEEDING: frozenset({Input.TIMER_TRYING}),
        State.COMPLETED: frozenset({Input.TIMER_G, Input.TIMER_H}),
        State.CONFIRMED: frozenset({Input.TIMER_I}),
        State.ACCEPTED: frozenset({Input.TIMER_L}),
    },
    Machine.NON_INVITE_SERVER: {State.COMPLETED: frozenset({Input.TIMER_J})},
}
# Started by the SEND_CANCEL action, never on entering a state.
NOT_ON_ENTRY: Final = frozenset({Input.TIMER_CANCEL})
TIMERS: Final = frozenset(timer for timer in Input if timer.name.startswith("TIMER_"))
NO_TIMERS: Final[frozenset[Input]] = frozenset()
# What TransactionTimeout.timer says for each timer that gives up.
TIMEOUT_NAMES: Final = {
    Input.TIMER_B: "B",
    Input.TIMER_F: "F",
    Input.TIMER_H: "H",
    Input.TIMER_CANCEL: "cancel",
}


def transition(machine: Machine, state: State, event: Input) -> Transition:
    """Look the input up in the machine's table; raises InvalidTransition if it is not there."""
    found = TABLES[machine][state].get(event)
    if found is None:
        raise InvalidTransition(machine, state, event)
    return found


# ---------------------------------------------------------------------------------------------
# Outputs
# ---------------------------------------------------------------------------------------------
class Outgoing(NamedTuple):
    """Bytes for the I/O layer: send ``data`` to ``addr`` over ``transport`` (UDP, TCP, ...)."""

    addr: Address
    transport: str
    data: bytes


@dataclass(frozen=True, slots=True)
class RequestReceived:
    """A new request for the TU: never a retransmission, never an ACK or a CANCEL."""

    txn_id: TransactionId
    request: SipRequest
    addr: Address
    transport: str


@dataclass(frozen=True, slots=True)
class AckReceived:
    """The ACK for a 2xx the TU sent on INVITE server transaction ``txn_id`` (RFC 6026 §7.1:
    "Any ACKs received from the network while in the Accepted state MUST be passed directly to
    the TU"). Stop the `TwoXxRetransmitter`; the dialog is confirmed."""

    txn_id: TransactionId
    ack: SipRequest
    addr: Address
    transport: str


@dataclass(frozen=True, slots=True)
class CancelReceived:
    """A CANCEL for INVITE server transaction ``txn_id``, which has no final response yet.

    The layer already answered the CANCEL with 200 (§9.2); the TU should now send 487 on
    ``txn_id``, with ``to_tag`` ("The To tag of the response to the CANCEL and the To tag in
    the response to the original request SHOULD be the same", §9.2).
    """

    txn_id: TransactionId
    cancel: SipRequest
    to_tag: str


@dataclass(frozen=True, slots=True)
class ResponseReceived:
    """A response on client transaction ``txn_id``; for an INVITE every 2xx, including
    retransmissions and the 2xx of other forks, which the TU must ACK itself (§13.2.2.4)."""

    txn_id: TransactionId
    response: SipResponse


@dataclass(frozen=True, slots=True)
class TransactionTimeout:
    """``timer`` gave up: "B" or "F" (no final response: treat as 408, §8.1.3.1), "H" (no ACK
    for our 300-699, §17.2.1) or "cancel" (no final response 64*T1 after our CANCEL, §9.1)."""

    txn_id: TransactionId
    timer: str


@dataclass(frozen=True, slots=True)
class TransportFailed:
    """The transport reported a failure for transaction ``txn_id`` (§17.1.4, §17.2.4)."""

    txn_id: TransactionId


@dataclass(frozen=True, slots=True)
class TransactionTerminated:
    """The transaction is gone; its id will not appear again. For cleanup in the TU."""

    txn_id: TransactionId


@dataclass(frozen=True, slots=True)
class StrayResponse:
    """A response no client transaction wants (§18.1.2 says drop it); for logging."""

    response: SipResponse
    addr: Address
    transport: str


@dataclass(frozen=True, slots=True)
class StrayAck:
    """An ACK matching no INVITE server transaction that could use it; for logging."""

    ack: SipRequest
    addr: Address
    transport: str


Event: TypeAlias = (
    RequestReceived
    | AckReceived
    | CancelReceived
    | ResponseReceived
    | TransactionTimeout
    | TransportFailed
    | TransactionTerminated
    | StrayResponse
    | StrayAck
)
