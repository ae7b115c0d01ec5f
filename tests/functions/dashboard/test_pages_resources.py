"""Trunks (credentials write-only) and agents (stream URL with a copy button)."""

from __future__ import annotations

from shared.models import Agent, TelephonyConfig, Trunk

TRUNK = {
    "name": "Carrier",
    "host": "sip.carrier.example",
    "port": "5060",
    "transport": "udp",
    "username": "acct",
    "password": "trunk-pass-123456",
    "inbound_sources": "203.0.113.0/24\n198.51.100.7",
}


def trunks_of(api_ctx, tenant) -> list[Trunk]:
    return api_ctx.repo.list(f"ACCOUNT#{tenant.account_id}#TRUNKS", Trunk, limit=10).items


def test_trunk_create_edit_with_write_only_password(signed_in, api_ctx, tenant) -> None:
    assert signed_in.post("/dashboard/trunks", TRUNK).status_code == 303
    listing = signed_in.get("/dashboard/trunks")
    [trunk] = listing.context["trunks"]
    assert trunk["inbound_sources"] == ["203.0.113.0/24", "198.51.100.7/32"]
    assert "trunk-pass-123456" not in listing.text and trunk["password"] == "…3456"
    edit = signed_in.get(f"/dashboard/trunks/{trunk['trunk_id']}")
    assert "trunk-pass-123456" not in edit.text
    saved = signed_in.post(
        f"/dashboard/trunks/{trunk['trunk_id']}", {**TRUNK, "password": "", "port": "5080"}
    )
    assert saved.status_code == 303
    again = signed_in.get("/dashboard/trunks").context["trunks"][0]
    assert again["port"] == 5080 and again["password"] == "…3456"


def test_trunk_refusals_by_field_without_echoing_the_password(signed_in) -> None:
    response = signed_in.post("/dashboard/trunks", {**TRUNK, "inbound_sources": "0.0.0.0/0"})
    assert response.status_code == 422 and "inbound_sources" in response.context["errors"]
    assert "trunk-pass-123456" not in response.text
    response = signed_in.post("/dashboard/trunks", {**TRUNK, "host": "bad host"})
    assert response.status_code == 422 and "host" in response.context["errors"]


def test_another_accounts_trunk_is_404(signed_in, make_browser, other_tenant) -> None:
    theirs = make_browser(other_tenant.key)
    theirs.post("/dashboard/trunks", TRUNK)
    [trunk] = theirs.get("/dashboard/trunks").context["trunks"]
    assert signed_in.get(f"/dashboard/trunks/{trunk['trunk_id']}").status_code == 404
    assert signed_in.post(f"/dashboard/trunks/{trunk['trunk_id']}", TRUNK).status_code == 404
    assert signed_in.get("/dashboard/trunks").context["trunks"] == []


def test_agents_show_their_stream_url_and_masked_tokens(
    signed_in, api_ctx, tenant, other_tenant
) -> None:
    agent = Agent(account_id=tenant.account_id, name="Sales", socket_url="vapi")
    api_ctx.repo.put(agent)
    api_ctx.repo.put(Agent(account_id=other_tenant.account_id, name="Theirs", socket_url="vapi"))
    api_ctx.repo.put(
        TelephonyConfig(
            account_id=tenant.account_id,
            provider="cloudonix",
            domain="d.example",
            bearer_token="cx-token-abcdef123",
        )
    )
    page = signed_in.get("/dashboard/agents")
    [shown] = page.context["agents"]
    assert shown["stream_url"].endswith(f"/api/v1/agent-stream/{agent.agent_uuid}")
    assert f'data-copy="stream-{agent.agent_uuid}"' in page.text
    assert "Theirs" not in page.text
    assert "cx-token-abcdef123" not in page.text and "…f123" in page.text
