"""Trunks in the dashboard: delete with confirmation (``delete_trunk``, as DELETE /api/trunks),
and the live registration state read from the edge nodes' heartbeat items.

The EdgeNode items are seeded as a node's heartbeat writes them (tests/edge_media/control has the
node side, against a real registrar): live and lapsed nodes, this account's and another's trunks.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from shared.clock import utc_now
from shared.models import EdgeNode, NodeStatus, Trunk, TrunkRegistrationState


def make_trunk(ctx: Any, account_id: str, name: str, *, registers: bool = True) -> Trunk:
    trunk = Trunk(
        account_id=account_id,
        name=name,
        host="127.0.0.1",
        username="gw" if registers else None,
        password="trunk-pass-123456" if registers else None,
        needs_registration=registers,
    )
    ctx.repo.put(trunk)
    return trunk


def trunk_of(ctx: Any, trunk: Trunk) -> Trunk | None:
    return ctx.repo.get(Trunk, trunk.account_id, trunk.trunk_id, consistent=True)  # type: ignore[no-any-return]


def seed_node(
    ctx: Any,
    sip_port: int,
    states: dict[str, TrunkRegistrationState],
    *,
    lapsed: bool = False,
    status: NodeStatus = NodeStatus.ACTIVE,
) -> EdgeNode:
    now = utc_now()
    node = EdgeNode(
        node_id=f"node-{uuid.uuid4().hex[:12]}",
        queue_url="http://127.0.0.1:4566/000000000000/agera-node",
        sip_address=f"127.0.0.1:{sip_port}",
        status=status,
        heartbeat_at=now - timedelta(seconds=120 if lapsed else 5),
        expires_at=now + timedelta(seconds=-60 if lapsed else 55),
        trunk_registrations=states,
    )
    ctx.repo.put(node)
    return node


def state(account_id: str, name: str, code: int | None, reason: str, **extra: Any) -> Any:
    return TrunkRegistrationState(
        account_id=account_id,
        state=name,
        status_code=code,
        reason=reason,
        since=utc_now() - timedelta(minutes=3),
        **extra,
    )


def test_delete_a_trunk_with_confirmation(signed_in, api_ctx, tenant) -> None:
    trunk = make_trunk(api_ctx, tenant.account_id, "Carrier A")
    listing = signed_in.get("/dashboard/trunks")
    path = f"/dashboard/trunks/{trunk.trunk_id}/delete"
    assert f'action="{path}" data-confirm="Delete the trunk “Carrier A”?' in listing.text
    edit = signed_in.get(f"/dashboard/trunks/{trunk.trunk_id}")
    assert f'action="{path}" data-confirm=' in edit.text
    forged = signed_in.post(path, csrf=False)
    assert forged.status_code == 403 and trunk_of(api_ctx, trunk) is not None
    deleted = signed_in.post(path)
    assert deleted.status_code == 200
    assert deleted.context["notice"] == "Trunk Carrier A was deleted."
    assert deleted.context["trunks"] == []
    assert trunk_of(api_ctx, trunk) is None
    assert signed_in.post(path).status_code == 404  # already gone


def test_another_accounts_trunk_cannot_be_deleted(signed_in, api_ctx, other_tenant) -> None:
    theirs = make_trunk(api_ctx, other_tenant.account_id, "Their carrier")
    signed_in.get("/dashboard/trunks")
    refused = signed_in.post(f"/dashboard/trunks/{theirs.trunk_id}/delete")
    assert refused.status_code == 404 and "Their carrier" not in refused.text
    assert trunk_of(api_ctx, theirs) is not None


def test_registration_state_per_live_node(
    signed_in, make_browser, api_ctx, tenant, other_tenant
) -> None:
    mine = make_trunk(api_ctx, tenant.account_id, "Registers")
    quiet = make_trunk(api_ctx, tenant.account_id, "Waiting")
    static = make_trunk(api_ctx, tenant.account_id, "Static", registers=False)
    theirs = make_trunk(api_ctx, other_tenant.account_id, "Theirs")
    expires = utc_now() + timedelta(seconds=540)
    me = tenant.account_id
    seed_node(
        api_ctx,
        5060,
        {
            mine.trunk_id: state(me, "registered", 200, "OK", expires_at=expires),
            theirs.trunk_id: state(other_tenant.account_id, "failed", 403, "Their Forbidden"),
            # An entry naming another account under one of our ids is not ours to show.
            quiet.trunk_id: state(other_tenant.account_id, "registered", 200, "Spoofed OK"),
        },
    )
    seed_node(
        api_ctx,
        5062,
        {mine.trunk_id: state(me, "failed", 403, "Forbidden by carrier")},
        status=NodeStatus.DRAINING,
    )
    seed_node(
        api_ctx, 5064, {mine.trunk_id: state(me, "registered", 200, "Lapsed OK")}, lapsed=True
    )

    page = signed_in.get("/dashboard/trunks")
    assert page.status_code == 200
    seen = page.context["registrations"]
    assert set(seen) == {mine.trunk_id, quiet.trunk_id}  # the non-registering trunk has none
    by_node = {r["node"]: r for r in seen[mine.trunk_id]}
    assert set(by_node) == {"127.0.0.1:5060", "127.0.0.1:5062"}  # the lapsed node is ignored
    ok, failed = by_node["127.0.0.1:5060"], by_node["127.0.0.1:5062"]
    assert (ok["state"], ok["status_code"], ok["reason"]) == ("registered", 200, "OK")
    assert ok["expires_at"] is not None and ok["node_id"] is None  # no node ids for account keys
    assert (failed["state"], failed["status_code"], failed["draining"]) == ("failed", 403, True)
    assert seen[quiet.trunk_id] == []

    text = page.text
    assert '<span class="reg reg-registered">registered</span>' in text
    assert "403 Forbidden by carrier" in text and "(draining)" in text
    assert "binding until" in text
    assert "no live node reports it yet" in text and "Does not register" in text
    for foreign in ("Lapsed OK", "Spoofed OK", "Their Forbidden", "Theirs", "node-"):
        assert foreign not in text
    assert static.trunk_id in text  # listed, with its edit link

    their_page = make_browser(other_tenant.key).get("/dashboard/trunks")
    assert "Their Forbidden" in their_page.text and "Forbidden by carrier" not in their_page.text


def test_admins_also_see_node_ids(make_browser, api_ctx, admin_tenant) -> None:
    trunk = make_trunk(api_ctx, admin_tenant.account_id, "Ops trunk")
    node = seed_node(
        api_ctx, 5066, {trunk.trunk_id: state(admin_tenant.account_id, "registering", None, "")}
    )
    page = make_browser(admin_tenant.key).get("/dashboard/trunks")
    [shown] = page.context["registrations"][trunk.trunk_id]
    assert shown["node_id"] == node.node_id and node.node_id in page.text
    assert '<span class="reg reg-registering">registering</span>' in page.text
