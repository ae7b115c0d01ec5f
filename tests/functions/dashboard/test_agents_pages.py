"""Agents and telephony configurations in the dashboard: create, edit, delete through the API's
domain functions; tokens write-only; refusals by field; another account's ids are 404.

Each test checks the rendered page and the table (through the repository), so a page that
claims success without writing, or writes without the API's checks, fails here.
"""

from __future__ import annotations

import uuid
from typing import Any

from shared.models import Agent, TelephonyConfig

BOT = "wss://bot.example.com/agent"
CX_TOKEN = "cx-secret-token-123456"
CX_TOKEN_2 = "cx-second-token-987654"
TW_TOKEN = "tw-secret-auth-token-abcdef"
SID = "AC" + "0123456789abcdef" * 2


def agent_of(ctx: Any, agent_uuid: str) -> Agent | None:
    return ctx.repo.get(Agent, uuid.UUID(agent_uuid), consistent=True)  # type: ignore[no-any-return]


def config_of(ctx: Any, account_id: str, config_id: str) -> TelephonyConfig | None:
    return ctx.repo.get(TelephonyConfig, account_id, config_id, consistent=True)  # type: ignore[no-any-return]


def make_config(ctx: Any, account_id: str, token: str = CX_TOKEN) -> TelephonyConfig:
    config = TelephonyConfig(
        account_id=account_id, provider="cloudonix", domain="acme.cloudonix.net", bearer_token=token
    )
    ctx.repo.put(config)
    return config


def make_agent(ctx: Any, account_id: str, name: str = "Sales", **fields: Any) -> Agent:
    agent = Agent(account_id=account_id, name=name, socket_url=BOT, **fields)
    ctx.repo.put(agent)
    return agent


# --------------------------------------------------------------------------- agents


def test_create_an_agent_then_see_its_stream_url(signed_in, api_ctx, tenant) -> None:
    config = make_config(api_ctx, tenant.account_id)
    form = signed_in.get("/dashboard/agents/new")
    assert form.status_code == 200
    assert f'<option value="{config.config_id}"' in form.text
    created = signed_in.post(
        "/dashboard/agents",
        {
            "name": "Support",
            "socket_url": BOT,
            "telephony_config_id": config.config_id,
            "require_token": "1",
        },
    )
    assert created.status_code == 303 and created.headers["location"] == "/dashboard/agents"
    page = signed_in.get("/dashboard/agents")
    [shown] = page.context["agents"]
    stored = agent_of(api_ctx, shown["agent_uuid"])
    assert stored is not None and stored.account_id == tenant.account_id
    assert (stored.name, stored.socket_url, stored.telephony_config_id, stored.require_token) == (
        "Support",
        BOT,
        config.config_id,
        True,
    )
    assert shown["stream_url"].endswith(f"/api/v1/agent-stream/{stored.agent_uuid}")
    assert f'data-copy="stream-{stored.agent_uuid}"' in page.text
    edit = signed_in.get(f"/dashboard/agents/{stored.agent_uuid}")
    assert shown["stream_url"] in edit.text and 'data-copy="stream-url"' in edit.text


def test_agent_refusals_are_shown_by_their_field_and_store_nothing(
    signed_in, api_ctx, tenant, other_tenant
) -> None:
    unsafe = signed_in.post(
        "/dashboard/agents", {"name": "Inside", "socket_url": "wss://intranet.example.net/x"}
    )
    assert unsafe.status_code == 422
    assert set(unsafe.context["errors"]) == {"socket_url"}
    assert 'id="e-socket_url"' in unsafe.text
    assert unsafe.context["form"]["name"] == "Inside"  # the form comes back filled in
    empty = signed_in.post("/dashboard/agents", {"name": "", "socket_url": BOT})
    assert empty.status_code == 422 and set(empty.context["errors"]) == {"name"}
    theirs = make_config(api_ctx, other_tenant.account_id)
    foreign = signed_in.post(
        "/dashboard/agents",
        {"name": "X", "socket_url": BOT, "telephony_config_id": theirs.config_id},
    )
    assert foreign.status_code == 422 and set(foreign.context["errors"]) == {"telephony_config_id"}
    assert signed_in.get("/dashboard/agents").context["agents"] == []


def test_edit_an_agent_attach_and_detach_its_config(signed_in, api_ctx, tenant) -> None:
    config = make_config(api_ctx, tenant.account_id)
    agent = make_agent(api_ctx, tenant.account_id, require_token=True)
    page = signed_in.get(f"/dashboard/agents/{agent.agent_uuid}")
    assert page.context["form"] == {
        "name": "Sales",
        "socket_url": BOT,
        "telephony_config_id": "",
        "require_token": "1",
    }
    saved = signed_in.post(
        f"/dashboard/agents/{agent.agent_uuid}",
        {"name": "Sales EU", "socket_url": "vapi&asst-1", "telephony_config_id": config.config_id},
    )
    assert saved.status_code == 303
    stored = agent_of(api_ctx, str(agent.agent_uuid))
    assert stored is not None
    assert (stored.name, stored.socket_url, stored.telephony_config_id, stored.require_token) == (
        "Sales EU",
        "vapi&asst-1",
        config.config_id,
        False,  # the box was left unticked
    )
    assert stored.agent_uuid == agent.agent_uuid
    detached = signed_in.post(
        f"/dashboard/agents/{agent.agent_uuid}",
        {"name": "Sales EU", "socket_url": "vapi", "telephony_config_id": ""},
    )
    assert detached.status_code == 303
    stored = agent_of(api_ctx, str(agent.agent_uuid))
    assert stored is not None and stored.telephony_config_id is None
    refused = signed_in.post(
        f"/dashboard/agents/{agent.agent_uuid}", {"name": "Sales EU", "socket_url": "ftp://x"}
    )
    assert refused.status_code == 422 and "socket_url" in refused.context["errors"]
    assert refused.context["editing"]["agent_uuid"] == str(agent.agent_uuid)


def test_delete_an_agent_needs_the_csrf_token(signed_in, api_ctx, tenant) -> None:
    agent = make_agent(api_ctx, tenant.account_id)
    listing = signed_in.get("/dashboard/agents")
    assert f'action="/dashboard/agents/{agent.agent_uuid}/delete" data-confirm=' in listing.text
    forged = signed_in.post(f"/dashboard/agents/{agent.agent_uuid}/delete", csrf=False)
    assert forged.status_code == 403 and agent_of(api_ctx, str(agent.agent_uuid)) is not None
    deleted = signed_in.post(f"/dashboard/agents/{agent.agent_uuid}/delete")
    assert deleted.status_code == 200
    assert deleted.context["notice"] == "Agent Sales was deleted."
    assert deleted.context["agents"] == []
    assert agent_of(api_ctx, str(agent.agent_uuid)) is None


def test_another_accounts_agent_is_404_and_untouched(
    signed_in, api_ctx, tenant, other_tenant
) -> None:
    theirs = make_agent(api_ctx, other_tenant.account_id, name="Their secret agent")
    path = f"/dashboard/agents/{theirs.agent_uuid}"
    signed_in.get("/dashboard/agents")
    for response in (
        signed_in.get(path),
        signed_in.post(path, {"name": "Mine now", "socket_url": BOT}),
        signed_in.post(f"{path}/delete"),
    ):
        assert response.status_code == 404
        assert "Their secret agent" not in response.text
    stored = agent_of(api_ctx, str(theirs.agent_uuid))
    assert stored is not None and stored.name == "Their secret agent"
    assert signed_in.get("/dashboard/agents/not-a-uuid").status_code == 404


# --------------------------------------------------------------------------- configs


def test_create_a_config_token_write_only(signed_in, api_ctx, tenant) -> None:
    assert signed_in.get("/dashboard/telephony-configs/new").status_code == 200
    created = signed_in.post(
        "/dashboard/telephony-configs",
        {
            "provider": "cloudonix",
            "domain": "Acme",
            "bearer_token": CX_TOKEN,
            # The hidden Twilio inputs are ignored, not sent to the API.
            "account_sid": "not-a-sid",
            "auth_token": "ignored-token",
        },
    )
    assert created.status_code == 303
    assert created.headers["location"] == "/dashboard/agents#telephony-configs"
    page = signed_in.get("/dashboard/agents")
    [shown] = page.context["configs"]
    stored = config_of(api_ctx, tenant.account_id, shown["config_id"])
    assert stored is not None
    assert (stored.provider, stored.domain, stored.bearer_token) == (
        "cloudonix",
        "acme.cloudonix.net",
        CX_TOKEN,
    )
    assert stored.account_sid is None and stored.auth_token is None
    assert CX_TOKEN not in page.text and "…3456" in page.text
    edit = signed_in.get(f"/dashboard/telephony-configs/{stored.config_id}")
    assert CX_TOKEN not in edit.text and "Stored: …3456" in edit.text
    assert edit.context["form"] == {"provider": "cloudonix", "domain": "acme.cloudonix.net"}


def test_config_refusals_by_field_never_echo_the_token(signed_in, api_ctx) -> None:
    bad_sid = signed_in.post(
        "/dashboard/telephony-configs",
        {"provider": "twilio", "account_sid": "AC-nope", "auth_token": TW_TOKEN},
    )
    assert bad_sid.status_code == 422 and set(bad_sid.context["errors"]) == {"account_sid"}
    assert TW_TOKEN not in bad_sid.text and "auth_token" not in bad_sid.context["form"]
    no_token = signed_in.post(
        "/dashboard/telephony-configs", {"provider": "twilio", "account_sid": SID}
    )
    assert no_token.status_code == 422 and set(no_token.context["errors"]) == {"auth_token"}
    assert 'id="e-auth_token"' in no_token.text
    no_provider = signed_in.post("/dashboard/telephony-configs", {"bearer_token": CX_TOKEN})
    assert no_provider.status_code == 422 and set(no_provider.context["errors"]) == {"provider"}
    assert CX_TOKEN not in no_provider.text
    assert signed_in.get("/dashboard/agents").context["configs"] == []


def test_edit_a_config_empty_token_keeps_it(signed_in, api_ctx, tenant) -> None:
    config = make_config(api_ctx, tenant.account_id)
    path = f"/dashboard/telephony-configs/{config.config_id}"
    signed_in.get(path)
    kept = signed_in.post(path, {"domain": "other.cloudonix.net", "bearer_token": ""})
    assert kept.status_code == 303
    stored = config_of(api_ctx, tenant.account_id, config.config_id)
    assert stored is not None
    assert (stored.domain, stored.bearer_token) == ("other.cloudonix.net", CX_TOKEN)
    replaced = signed_in.post(path, {"domain": "other.cloudonix.net", "bearer_token": CX_TOKEN_2})
    assert replaced.status_code == 303
    stored = config_of(api_ctx, tenant.account_id, config.config_id)
    assert stored is not None and stored.bearer_token == CX_TOKEN_2
    # The provider is fixed: a posted provider is ignored, another provider's fields too.
    refused = signed_in.post(path, {"domain": "", "bearer_token": CX_TOKEN, "provider": "twilio"})
    assert refused.status_code == 422 and set(refused.context["errors"]) == {"domain"}
    assert CX_TOKEN not in refused.text
    stored = config_of(api_ctx, tenant.account_id, config.config_id)
    assert stored is not None
    assert (stored.provider, stored.domain, stored.bearer_token) == (
        "cloudonix",
        "other.cloudonix.net",
        CX_TOKEN_2,
    )


def test_a_config_in_use_is_not_deleted_until_detached(signed_in, api_ctx, tenant) -> None:
    config = make_config(api_ctx, tenant.account_id)
    agent = make_agent(api_ctx, tenant.account_id, telephony_config_id=config.config_id)
    listing = signed_in.get("/dashboard/agents")
    delete = f"/dashboard/telephony-configs/{config.config_id}/delete"
    assert f'action="{delete}" data-confirm=' in listing.text
    in_use = signed_in.post(delete)
    assert in_use.status_code == 409
    assert str(agent.agent_uuid) in in_use.context["errors"][""]
    assert "choose no configuration" in in_use.text
    assert config_of(api_ctx, tenant.account_id, config.config_id) is not None
    signed_in.post(
        f"/dashboard/agents/{agent.agent_uuid}",
        {"name": agent.name, "socket_url": BOT, "telephony_config_id": ""},
    )
    assert signed_in.post(delete, csrf=False).status_code == 403
    deleted = signed_in.post(delete)
    assert deleted.status_code == 200 and config.config_id in deleted.context["notice"]
    assert config_of(api_ctx, tenant.account_id, config.config_id) is None


def test_another_accounts_config_is_404_and_untouched(
    signed_in, api_ctx, tenant, other_tenant
) -> None:
    theirs = make_config(api_ctx, other_tenant.account_id)
    path = f"/dashboard/telephony-configs/{theirs.config_id}"
    signed_in.get("/dashboard/agents")
    for response in (
        signed_in.get(path),
        signed_in.post(path, {"domain": "evil.cloudonix.net", "bearer_token": CX_TOKEN_2}),
        signed_in.post(f"{path}/delete"),
    ):
        assert response.status_code == 404
        assert "acme.cloudonix.net" not in response.text and "…3456" not in response.text
    stored = config_of(api_ctx, other_tenant.account_id, theirs.config_id)
    assert stored is not None
    assert (stored.domain, stored.bearer_token) == ("acme.cloudonix.net", CX_TOKEN)
    assert signed_in.get("/dashboard/agents").context["configs"] == []
