"""Account settings and the webhook secret page."""

from __future__ import annotations

import html
import re

from shared.models import Account
from shared.signing import canonical_json, sign

EL_KEY = "el-secret-key-0123456789-WXYZ"


def stored(api_ctx, tenant) -> Account:
    return api_ctx.repo.get(Account, tenant.account_id, consistent=True)


def settings_form(**changes: str) -> dict[str, str]:
    form = {
        "webhook_url": "",
        "socket_url": "",
        "elevenlabs.agent_id": "",
        "elevenlabs.api_key": "",
        "vapi.assistant_id": "",
        "vapi.api_key": "",
    }
    form.update(changes)
    return form


def test_settings_save_through_the_account_patch(signed_in, tenant, api_ctx) -> None:
    response = signed_in.post(
        "/dashboard/account",
        settings_form(
            webhook_url="https://hooks.example.com/agera",
            socket_url="elevenlabs",
            **{"elevenlabs.agent_id": "agent_123", "elevenlabs.api_key": EL_KEY},
        ),
    )
    assert response.status_code == 200 and response.context["notice"] == "Settings saved."
    account = stored(api_ctx, tenant)
    assert account.webhook_url == "https://hooks.example.com/agera"
    assert account.socket_url == "elevenlabs"
    assert account.elevenlabs.agent_id == "agent_123"
    assert account.elevenlabs.api_key == EL_KEY
    assert EL_KEY not in response.text


def test_provider_keys_are_write_only(signed_in, tenant, api_ctx) -> None:
    signed_in.post("/dashboard/account", settings_form(**{"elevenlabs.api_key": EL_KEY}))
    page = signed_in.get("/dashboard/account")
    assert EL_KEY not in page.text
    assert page.context["account"]["elevenlabs"]["api_key"] == "…WXYZ"
    assert "…WXYZ" in page.text
    # An empty input keeps the key; the Remove box clears it.
    signed_in.post("/dashboard/account", settings_form(webhook_url="https://hooks.example.com/x"))
    assert stored(api_ctx, tenant).elevenlabs.api_key == EL_KEY
    signed_in.post("/dashboard/account", settings_form(**{"elevenlabs.api_key_clear": "1"}))
    assert stored(api_ctx, tenant).elevenlabs.api_key is None


def test_a_refused_field_is_shown_by_it_and_typed_keys_are_not_echoed(
    signed_in, tenant, api_ctx
) -> None:
    response = signed_in.post(
        "/dashboard/account",
        settings_form(webhook_url="http://intranet.example.net/hook", **{"vapi.api_key": EL_KEY}),
    )
    assert response.status_code == 422
    assert set(response.context["errors"]) == {"webhook_url"}
    assert 'id="e-webhook_url"' in response.text
    assert response.context["form"]["webhook_url"] == "http://intranet.example.net/hook"
    assert EL_KEY not in response.text
    assert stored(api_ctx, tenant).vapi.api_key is None


def test_invalid_agent_id_is_refused_by_its_field(signed_in) -> None:
    response = signed_in.post("/dashboard/account", settings_form(**{"vapi.assistant_id": "a b"}))
    assert response.status_code == 422 and "vapi.assistant_id" in response.context["errors"]


def test_limits_are_shown_read_only(signed_in) -> None:
    response = signed_in.get("/dashboard/account")
    assert response.context["account"]["limits"]["max_concurrent_calls"] == 100
    assert 'name="limits' not in response.text


def test_settings_need_csrf(signed_in, tenant, api_ctx) -> None:
    response = signed_in.post(
        "/dashboard/account", settings_form(webhook_url="https://hooks.example.com/a"), csrf=False
    )
    assert response.status_code == 403
    assert stored(api_ctx, tenant).webhook_url is None


def test_the_secret_is_masked_until_revealed(signed_in, tenant, api_ctx) -> None:
    secret = stored(api_ctx, tenant).webhook_secret
    page = signed_in.get("/dashboard/webhook-secret")
    assert secret not in page.text and page.context["masked"] == "…" + secret[-4:]
    revealed = signed_in.post("/dashboard/webhook-secret/reveal")
    assert revealed.status_code == 200 and secret in revealed.text
    assert revealed.headers["cache-control"] == "no-store"
    assert 'data-copy="secret-value"' in revealed.text


def test_reveal_needs_csrf(signed_in, tenant, api_ctx) -> None:
    secret = stored(api_ctx, tenant).webhook_secret
    refused = signed_in.post("/dashboard/webhook-secret/reveal", csrf=False)
    assert refused.status_code == 403 and secret not in refused.text
    by_header = signed_in.client.post(
        "/dashboard/webhook-secret/reveal", headers={"X-CSRF-Token": signed_in.csrf}
    )
    assert by_header.status_code == 200 and secret in by_header.text


def test_rotate_replaces_the_secret(signed_in, tenant, api_ctx) -> None:
    before = stored(api_ctx, tenant).webhook_secret
    assert signed_in.post("/dashboard/webhook-secret/rotate", csrf=False).status_code == 403
    assert stored(api_ctx, tenant).webhook_secret == before
    response = signed_in.post("/dashboard/webhook-secret/rotate")
    after = stored(api_ctx, tenant).webhook_secret
    assert response.status_code == 200 and after != before
    assert after not in response.text and before not in response.text
    assert "replaced" in response.context["notice"]


def test_the_verification_code_on_the_page_accepts_our_signatures(signed_in) -> None:
    page = signed_in.get("/dashboard/webhook-secret")
    code = html.unescape(
        re.search(r'<pre id="verify-snippet"><code>(.*?)</code></pre>', page.text, re.S).group(1)
    )
    namespace: dict = {}
    exec(compile(code, "snippet", "exec"), namespace)  # the page's own code, as a user copies it
    check = namespace["signature_ok"]
    payload = {"event_type": "call.answered", "caller_name": "José", "call_uuid": "u-1"}
    header = sign("whsec_test", canonical_json(payload))
    assert check("whsec_test", payload, header)
    assert not check("whsec_other", payload, header)
    assert not check("whsec_test", {**payload, "call_uuid": "u-2"}, header)
    assert not check("whsec_test", payload, header.removeprefix("sha256="))
