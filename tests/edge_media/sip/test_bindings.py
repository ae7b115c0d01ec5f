"""The binding record and the in-memory store: ordering, expiry sweeps, limits, targets."""

from __future__ import annotations

import pytest

from edge_media.sip.bindings import Aor, Binding, BindingStore, Target
from edge_media.sip.header_values import parse_name_addr
from edge_media.sip.uri import SipUri

NOW = 1_700_000_000.0
ALICE = Aor("acc_1", "101")
BOB = Aor("acc_1", "102")


def binding(
    contact: str = "<sip:alice@10.0.0.5:5062>",
    *,
    aor: Aor = ALICE,
    expires_at: float = NOW + 3600,
    updated_at: float = NOW,
    registered_at: float | None = None,
    q: float | None = None,
    source: tuple[str, int] = ("203.0.113.7", 40123),
    transport: str = "udp",
) -> Binding:
    return Binding(
        aor=aor,
        contact=parse_name_addr(contact),
        source=source,
        transport=transport,
        expires_at=expires_at,
        registered_at=updated_at if registered_at is None else registered_at,
        updated_at=updated_at,
        call_id="reg-1@10.0.0.5",
        cseq=1,
        q=q,
    )


class TestBinding:
    def test_target_is_the_contact_uri_sent_to_the_source_address(self) -> None:
        b = binding(transport="tcp")
        assert b.target() == Target(
            SipUri.parse("sip:alice@10.0.0.5:5062"), ("203.0.113.7", 40123), "tcp"
        )
        assert b.behind_nat

    def test_not_behind_nat_when_contact_names_the_source(self) -> None:
        assert not binding("<sip:alice@192.0.2.10>", source=("192.0.2.10", 5060)).behind_nat
        assert binding("<sip:alice@192.0.2.10>", source=("192.0.2.10", 5070)).behind_nat
        assert not binding("<sips:alice@192.0.2.10>", source=("192.0.2.10", 5061)).behind_nat

    def test_source_text_brackets_ipv6(self) -> None:
        assert binding().source_text == "203.0.113.7:40123"
        assert binding(source=("2001:db8::7", 5060)).source_text == "[2001:db8::7]:5060"

    def test_remaining_rounds_and_never_lists_zero_for_a_live_binding(self) -> None:
        b = binding(expires_at=NOW + 3600)
        assert [b.remaining(NOW + d) for d in (0, 0.4, 0.6, 3599.7)] == [3600, 3600, 3599, 1]

    def test_listed_keeps_parameters_and_replaces_expires(self) -> None:
        b = binding(
            '"Alice" <sip:alice@10.0.0.5:5062;transport=tcp>;expires=60;q=0.5;'
            '+sip.instance="<urn:uuid:00000000-0000-1000-8000-000A95A0E128>"'
        )
        assert b.listed(NOW + 100) == (
            '"Alice" <sip:alice@10.0.0.5:5062;transport=tcp>;q=0.5;'
            '+sip.instance="<urn:uuid:00000000-0000-1000-8000-000A95A0E128>";expires=3500'
        )

    def test_non_sip_contact_is_refused_by_uri(self) -> None:
        with pytest.raises(TypeError, match="not a SIP URI"):
            _ = binding("<tel:+15005550006>").uri


class TestStore:
    def test_contacts_ordered_by_q_then_most_recent_and_live_only(self) -> None:
        store = BindingStore()
        old = binding("<sip:a@10.0.0.1>", updated_at=NOW - 50)
        recent = binding("<sip:b@10.0.0.2>", updated_at=NOW - 10)
        low_q = binding("<sip:c@10.0.0.3>", q=0.1)
        high_q = binding("<sip:d@10.0.0.4>", q=1.0, updated_at=NOW - 100)
        expired = binding("<sip:e@10.0.0.5>", expires_at=NOW - 1)
        store.replace(ALICE, [old, low_q, expired, recent, high_q])
        # No q counts as 1.0: ties are broken by the latest refresh.
        assert store.contacts_for(ALICE, NOW) == [recent, old, high_q, low_q]
        assert store.contacts_for(BOB, NOW) == []
        assert len(store) == 5 and ALICE in store and BOB not in store

    def test_expire_sweeps_in_time_order_and_reports_what_it_removed(self) -> None:
        store = BindingStore()
        a1 = binding("<sip:a1@10.0.0.1>", expires_at=NOW + 60)
        a2 = binding("<sip:a2@10.0.0.1>", expires_at=NOW + 120)
        b1 = binding("<sip:b1@10.0.0.2>", aor=BOB, expires_at=NOW + 90)
        store.replace(ALICE, [a1, a2])
        store.replace(BOB, [b1])
        assert store.next_expiry() == NOW + 60
        assert store.expire(NOW + 59) == []
        assert store.expire(NOW + 100) == [a1, b1]
        assert BOB not in store and store.bindings(ALICE) == (a2,)
        assert store.next_expiry() == NOW + 120
        assert store.expire(NOW + 120) == [a2]
        assert len(store) == 0 and store.next_expiry() is None and list(store.aors()) == []

    def test_a_refreshed_binding_survives_its_old_expiry_time(self) -> None:
        store = BindingStore()
        store.replace(ALICE, [binding(expires_at=NOW + 60)])
        for step in range(1, 500):  # many refreshes: stale heap entries must not pile up forever
            store.replace(ALICE, [binding(expires_at=NOW + 60 + step, updated_at=NOW + step)])
        refreshed = store.bindings(ALICE)[0]
        assert store.expire(NOW + 558) == []
        assert store.expire(NOW + 559) == [refreshed]
        assert store.next_expiry() is None

    def test_limits(self) -> None:
        store = BindingStore(max_aors=1, max_bindings_per_aor=2)
        with pytest.raises(ValueError, match="more than 2 bindings"):
            store.replace(ALICE, [binding(f"<sip:a{i}@10.0.0.1>") for i in range(3)])
        store.replace(ALICE, [binding()])
        assert store.has_room_for(ALICE) and not store.has_room_for(BOB)
        with pytest.raises(ValueError, match="already holds 1 AORs"):
            store.replace(BOB, [binding(aor=BOB)])
        with pytest.raises(ValueError, match="belong to the AOR"):
            store.replace(ALICE, [binding(aor=BOB)])
        with pytest.raises(ValueError, match="positive"):
            BindingStore(max_aors=0)

    def test_restore_and_remove_aor(self) -> None:
        store = BindingStore(max_bindings_per_aor=2)
        first = binding("<sip:a@10.0.0.1>")
        assert store.restore(first, NOW)
        assert not store.restore(binding("<sip:b@10.0.0.1>", expires_at=NOW), NOW)  # expired
        second = binding("<sip:b@10.0.0.1>")
        assert store.restore(second, NOW)
        assert not store.restore(binding("<sip:c@10.0.0.1>"), NOW)  # over the per-AOR limit
        newer = binding("<sip:a@10.0.0.1>", updated_at=NOW + 5)  # same URI replaces
        assert store.restore(newer, NOW)
        assert store.contacts_for(ALICE, NOW) == [newer, second]
        assert store.remove_aor(ALICE) == [second, newer]
        assert ALICE not in store and store.remove_aor(ALICE) == []
