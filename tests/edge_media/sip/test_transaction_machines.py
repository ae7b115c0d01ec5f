"""The four §17 machines as tables: every RFC figure edge, completeness, illegal inputs.

The edges below are written out again from RFC 3261 Figures 5-8 and RFC 6026 Figures 3 and 5,
independently of the tables, so a table edited by mistake fails here.
"""

from __future__ import annotations

import pytest

from edge_media.sip.transaction_machines import (
    INITIAL_STATE,
    STATE_TIMERS,
    TABLES,
    Action,
    Input,
    InvalidTransition,
    Machine,
    State,
    TransactionError,
    transition,
)

ICT, NICT, IST, NIST = (
    Machine.INVITE_CLIENT,
    Machine.NON_INVITE_CLIENT,
    Machine.INVITE_SERVER,
    Machine.NON_INVITE_SERVER,
)
St, In, Ac = State, Input, Action

RFC_EDGES = [
    # Figure 5 / RFC 6026 Figure 3: INVITE client transaction
    (ICT, St.CALLING, In.TIMER_A, St.CALLING, (Ac.RETRANSMIT,)),
    (ICT, St.CALLING, In.TIMER_B, St.TERMINATED, (Ac.TIMEOUT,)),
    (ICT, St.CALLING, In.TRANSPORT_ERROR, St.TERMINATED, (Ac.TRANSPORT_FAILED,)),
    (ICT, St.CALLING, In.PROVISIONAL, St.PROCEEDING, (Ac.TO_TU, Ac.SEND_CANCEL)),
    (ICT, St.CALLING, In.SUCCESS, St.ACCEPTED, (Ac.TO_TU,)),
    (ICT, St.CALLING, In.FAILURE, St.COMPLETED, (Ac.SEND_ACK, Ac.TO_TU)),
    (ICT, St.PROCEEDING, In.PROVISIONAL, St.PROCEEDING, (Ac.TO_TU,)),
    (ICT, St.PROCEEDING, In.SUCCESS, St.ACCEPTED, (Ac.TO_TU,)),
    (ICT, St.PROCEEDING, In.FAILURE, St.COMPLETED, (Ac.SEND_ACK, Ac.TO_TU)),
    (ICT, St.COMPLETED, In.FAILURE, St.COMPLETED, (Ac.SEND_ACK,)),
    (ICT, St.COMPLETED, In.TIMER_D, St.TERMINATED, ()),
    (ICT, St.COMPLETED, In.TRANSPORT_ERROR, St.TERMINATED, (Ac.TRANSPORT_FAILED,)),
    (ICT, St.ACCEPTED, In.SUCCESS, St.ACCEPTED, (Ac.TO_TU,)),
    (ICT, St.ACCEPTED, In.TIMER_M, St.TERMINATED, ()),
    # §9.1: CANCEL waits for a provisional response, then 64*T1 for the final one
    (ICT, St.CALLING, In.CANCEL, St.CALLING, ()),
    (ICT, St.PROCEEDING, In.CANCEL, St.PROCEEDING, (Ac.SEND_CANCEL,)),
    (ICT, St.PROCEEDING, In.TIMER_CANCEL, St.TERMINATED, (Ac.TIMEOUT,)),
    # Figure 6: non-INVITE client transaction
    (NICT, St.TRYING, In.TIMER_E, St.TRYING, (Ac.RETRANSMIT,)),
    (NICT, St.TRYING, In.TIMER_F, St.TERMINATED, (Ac.TIMEOUT,)),
    (NICT, St.TRYING, In.TRANSPORT_ERROR, St.TERMINATED, (Ac.TRANSPORT_FAILED,)),
    (NICT, St.TRYING, In.PROVISIONAL, St.PROCEEDING, (Ac.TO_TU,)),
    (NICT, St.TRYING, In.SUCCESS, St.COMPLETED, (Ac.TO_TU,)),
    (NICT, St.TRYING, In.FAILURE, St.COMPLETED, (Ac.TO_TU,)),
    (NICT, St.PROCEEDING, In.TIMER_E, St.PROCEEDING, (Ac.RETRANSMIT,)),
    (NICT, St.PROCEEDING, In.PROVISIONAL, St.PROCEEDING, (Ac.TO_TU,)),
    (NICT, St.PROCEEDING, In.SUCCESS, St.COMPLETED, (Ac.TO_TU,)),
    (NICT, St.PROCEEDING, In.FAILURE, St.COMPLETED, (Ac.TO_TU,)),
    (NICT, St.PROCEEDING, In.TIMER_F, St.TERMINATED, (Ac.TIMEOUT,)),
    (NICT, St.PROCEEDING, In.TRANSPORT_ERROR, St.TERMINATED, (Ac.TRANSPORT_FAILED,)),
    (NICT, St.COMPLETED, In.TIMER_K, St.TERMINATED, ()),
    # Figure 7 / RFC 6026 Figure 5: INVITE server transaction
    (IST, St.PROCEEDING, In.REQUEST, St.PROCEEDING, (Ac.RESEND,)),
    (IST, St.PROCEEDING, In.TIMER_TRYING, St.PROCEEDING, (Ac.SEND_TRYING,)),
    (IST, St.PROCEEDING, In.SEND_PROVISIONAL, St.PROCEEDING, (Ac.SEND,)),
    (IST, St.PROCEEDING, In.SEND_SUCCESS, St.ACCEPTED, (Ac.SEND,)),
    (IST, St.PROCEEDING, In.SEND_FAILURE, St.COMPLETED, (Ac.SEND,)),
    (IST, St.PROCEEDING, In.TRANSPORT_ERROR, St.TERMINATED, (Ac.TRANSPORT_FAILED,)),
    (IST, St.COMPLETED, In.REQUEST, St.COMPLETED, (Ac.RESEND,)),
    (IST, St.COMPLETED, In.TIMER_G, St.COMPLETED, (Ac.RETRANSMIT,)),
    (IST, St.COMPLETED, In.TIMER_H, St.TERMINATED, (Ac.TIMEOUT,)),
    (IST, St.COMPLETED, In.ACK, St.CONFIRMED, ()),
    (IST, St.COMPLETED, In.TRANSPORT_ERROR, St.TERMINATED, (Ac.TRANSPORT_FAILED,)),
    (IST, St.CONFIRMED, In.ACK, St.CONFIRMED, ()),
    (IST, St.CONFIRMED, In.TIMER_I, St.TERMINATED, ()),
    (IST, St.ACCEPTED, In.REQUEST, St.ACCEPTED, ()),
    (IST, St.ACCEPTED, In.ACK, St.ACCEPTED, (Ac.ACK_TO_TU,)),
    (IST, St.ACCEPTED, In.SEND_SUCCESS, St.ACCEPTED, (Ac.SEND,)),
    (IST, St.ACCEPTED, In.TRANSPORT_ERROR, St.ACCEPTED, (Ac.TRANSPORT_FAILED,)),
    (IST, St.ACCEPTED, In.TIMER_L, St.TERMINATED, ()),
    # Figure 8: non-INVITE server transaction
    (NIST, St.TRYING, In.REQUEST, St.TRYING, ()),
    (NIST, St.TRYING, In.SEND_PROVISIONAL, St.PROCEEDING, (Ac.SEND,)),
    (NIST, St.TRYING, In.SEND_SUCCESS, St.COMPLETED, (Ac.SEND,)),
    (NIST, St.TRYING, In.SEND_FAILURE, St.COMPLETED, (Ac.SEND,)),
    (NIST, St.PROCEEDING, In.REQUEST, St.PROCEEDING, (Ac.RESEND,)),
    (NIST, St.PROCEEDING, In.SEND_PROVISIONAL, St.PROCEEDING, (Ac.SEND,)),
    (NIST, St.PROCEEDING, In.SEND_SUCCESS, St.COMPLETED, (Ac.SEND,)),
    (NIST, St.PROCEEDING, In.SEND_FAILURE, St.COMPLETED, (Ac.SEND,)),
    (NIST, St.PROCEEDING, In.TRANSPORT_ERROR, St.TERMINATED, (Ac.TRANSPORT_FAILED,)),
    (NIST, St.COMPLETED, In.REQUEST, St.COMPLETED, (Ac.RESEND,)),
    (NIST, St.COMPLETED, In.SEND_SUCCESS, St.COMPLETED, ()),
    (NIST, St.COMPLETED, In.SEND_FAILURE, St.COMPLETED, ()),
    (NIST, St.COMPLETED, In.TIMER_J, St.TERMINATED, ()),
    (NIST, St.COMPLETED, In.TRANSPORT_ERROR, St.TERMINATED, (Ac.TRANSPORT_FAILED,)),
]

# Late or duplicate datagrams the figures do not draw: absorbed, or reported as stray.
ABSORBED = [
    (ICT, St.COMPLETED, In.PROVISIONAL, ()),
    (ICT, St.COMPLETED, In.SUCCESS, (Ac.STRAY,)),
    (ICT, St.ACCEPTED, In.PROVISIONAL, ()),
    (ICT, St.ACCEPTED, In.FAILURE, (Ac.STRAY,)),
    (NICT, St.COMPLETED, In.PROVISIONAL, ()),
    (NICT, St.COMPLETED, In.SUCCESS, ()),
    (NICT, St.COMPLETED, In.FAILURE, ()),
    (IST, St.PROCEEDING, In.ACK, (Ac.STRAY,)),
    (IST, St.CONFIRMED, In.REQUEST, ()),
]


@pytest.mark.parametrize(("machine", "state", "event", "target", "actions"), RFC_EDGES)
def test_rfc_edge(
    machine: Machine, state: State, event: Input, target: State, actions: tuple[Action, ...]
) -> None:
    step = transition(machine, state, event)
    assert step.target is target
    assert step.actions == actions


@pytest.mark.parametrize(("machine", "state", "event", "actions"), ABSORBED)
def test_absorbed_inputs_keep_the_state(
    machine: Machine, state: State, event: Input, actions: tuple[Action, ...]
) -> None:
    step = transition(machine, state, event)
    assert step.target is state
    assert step.actions == actions


def test_tables_hold_exactly_the_listed_edges() -> None:
    listed = {(m, s, e) for m, s, e, _, _ in RFC_EDGES} | {(m, s, e) for m, s, e, _ in ABSORBED}
    in_tables = {
        (machine, state, event)
        for machine, table in TABLES.items()
        for state, row in table.items()
        for event in row
    }
    assert in_tables == listed


# What the network can deliver to each machine: it must never hit a missing table entry.
NETWORK_INPUTS = {
    ICT: (In.PROVISIONAL, In.SUCCESS, In.FAILURE),
    NICT: (In.PROVISIONAL, In.SUCCESS, In.FAILURE),
    IST: (In.REQUEST, In.ACK),
    NIST: (In.REQUEST,),
}


@pytest.mark.parametrize("machine", list(Machine))
def test_network_inputs_are_defined_in_every_live_state(machine: Machine) -> None:
    for state, row in TABLES[machine].items():
        if state is St.TERMINATED:
            assert row == {}
            continue
        missing = [event for event in NETWORK_INPUTS[machine] if event not in row]
        assert missing == [], (machine, state)


@pytest.mark.parametrize("machine", list(Machine))
def test_every_running_timer_can_fire(machine: Machine) -> None:
    for state, timers in STATE_TIMERS[machine].items():
        assert timers <= TABLES[machine][state].keys(), (machine, state)


@pytest.mark.parametrize("machine", list(Machine))
def test_initial_state_is_in_the_table(machine: Machine) -> None:
    assert INITIAL_STATE[machine] in TABLES[machine]
    assert INITIAL_STATE[machine] is not St.TERMINATED


ILLEGAL = [
    # §17.2.1: one final response per INVITE; nothing after the 2xx but more 2xx (RFC 6026).
    (IST, St.COMPLETED, In.SEND_SUCCESS),
    (IST, St.COMPLETED, In.SEND_PROVISIONAL),
    (IST, St.COMPLETED, In.SEND_FAILURE),
    (IST, St.CONFIRMED, In.SEND_FAILURE),
    (IST, St.ACCEPTED, In.SEND_PROVISIONAL),
    (IST, St.ACCEPTED, In.SEND_FAILURE),
    (IST, St.TERMINATED, In.SEND_SUCCESS),
    # §17.2.2: a provisional after the final
    (NIST, St.COMPLETED, In.SEND_PROVISIONAL),
    # §9.1: no CANCEL after a final response
    (ICT, St.COMPLETED, In.CANCEL),
    (ICT, St.ACCEPTED, In.CANCEL),
    (ICT, St.TERMINATED, In.CANCEL),
    # timers of other states, and inputs of other machines
    (ICT, St.PROCEEDING, In.TIMER_B),
    (ICT, St.PROCEEDING, In.TIMER_A),
    (NICT, St.COMPLETED, In.TIMER_E),
    (IST, St.PROCEEDING, In.TIMER_G),
    (ICT, St.CALLING, In.SEND_SUCCESS),
    (NICT, St.TRYING, In.ACK),
    (NIST, St.TRYING, In.PROVISIONAL),
]


@pytest.mark.parametrize(("machine", "state", "event"), ILLEGAL)
def test_illegal_input_raises(machine: Machine, state: State, event: Input) -> None:
    with pytest.raises(InvalidTransition) as caught:
        transition(machine, state, event)
    error = caught.value
    assert isinstance(error, TransactionError)
    assert (error.machine, error.state, error.event) == (machine, state, event)
    assert str(error) == f"{machine.value}: {event.value} is not allowed in state {state.value}"
