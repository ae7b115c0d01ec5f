"""Numbers and extensions pages with the route mode picker."""

from __future__ import annotations

import uuid

import pytest

from functions.dashboard import route_form
from shared.models import Agent, Extension, Number


def new_number() -> str:
    return "+1555" + str(uuid.uuid4().int)[:7]


def picker(mode: str, **fields: str) -> dict[str, str]:
    return {"route_mode": mode, **dict.fromkeys(route_form.FIELDS, ""), **fields}


def stored_route(api_ctx, number: str) -> dict | None:
    item = api_ctx.repo.get(Number, number, consistent=True)
    return None if item is None else item.route.model_dump(mode="json", exclude_none=True)


@pytest.fixture
def agent(api_ctx, tenant) -> Agent:
    made = Agent(account_id=tenant.account_id, name="Support", socket_url="wss://bot.example.com/a")
    api_ctx.repo.put(made, create_only=True)
    return made


@pytest.mark.parametrize(
    "mode,fields,route",
    [
        (
            "bot",
            {"route_socket_url": "wss://bot.example.com/m"},
            {"socket_url": "wss://bot.example.com/m"},
        ),
        (
            "webhook",
            {"route_webhook_url": "https://hooks.example.com/r"},
            {"webhook_url": "https://hooks.example.com/r"},
        ),
        ("elevenlabs", {}, {"socket_url": "elevenlabs"}),
        (
            "elevenlabs",
            {"route_elevenlabs_agent": "agent_42"},
            {"socket_url": "elevenlabs&agent_42"},
        ),
        ("vapi", {"route_vapi_assistant": "asst-1"}, {"socket_url": "vapi&asst-1"}),
    ],
)
def test_each_mode_stores_the_apis_route(signed_in, api_ctx, mode, fields, route) -> None:
    number = new_number()
    response = signed_in.post("/dashboard/numbers", {"number": number, **picker(mode, **fields)})
    assert response.status_code == 303, response.text
    assert stored_route(api_ctx, number) == route
    edit = signed_in.get(f"/dashboard/numbers/{number}")
    assert edit.context["form"]["route_mode"] == mode  # the picker reads back what it wrote


def test_agent_mode_offers_the_accounts_agents(signed_in, api_ctx, agent, other_tenant) -> None:
    foreign = Agent(account_id=other_tenant.account_id, name="Theirs", socket_url="vapi")
    api_ctx.repo.put(foreign, create_only=True)
    form = signed_in.get("/dashboard/numbers/new")
    offered = {a["agent_uuid"] for a in form.context["agents"]}
    assert offered == {str(agent.agent_uuid)}
    number = new_number()
    signed_in.post(
        "/dashboard/numbers",
        {"number": number, **picker("agent", route_agent_uuid=str(agent.agent_uuid))},
    )
    assert stored_route(api_ctx, number) == {"agent_uuid": str(agent.agent_uuid)}
    refused = signed_in.post(
        "/dashboard/numbers",
        {"number": new_number(), **picker("agent", route_agent_uuid=str(foreign.agent_uuid))},
    )
    assert refused.status_code == 422 and "route_agent_uuid" in refused.context["errors"]


@pytest.mark.parametrize(
    "fields,error_field",
    [
        (picker("bot", route_socket_url="elevenlabs"), "route_socket_url"),
        (picker("bot", route_socket_url="https://bot.example.com/"), "route_socket_url"),
        (picker("webhook", route_webhook_url="http://intranet.example.net/"), "route_webhook_url"),
        (picker("elevenlabs", route_elevenlabs_agent="no spaces"), "route_elevenlabs_agent"),
        (picker("nothing"), "route_mode"),
        ({"number": "12", **picker("vapi")}, "number"),
    ],
)
def test_refusals_are_shown_by_the_field(signed_in, fields, error_field) -> None:
    response = signed_in.post("/dashboard/numbers", {"number": new_number(), **fields})
    assert response.status_code == 422
    assert list(response.context["errors"]) == [error_field]
    assert f'id="e-{error_field}"' in response.text


def test_a_number_another_account_holds_is_a_conflict_on_number(
    signed_in, make_browser, other_tenant
) -> None:
    number = new_number()
    theirs = make_browser(other_tenant.key)
    assert (
        theirs.post("/dashboard/numbers", {"number": number, **picker("vapi")}).status_code == 303
    )
    response = signed_in.post("/dashboard/numbers", {"number": number, **picker("vapi")})
    assert response.status_code == 409 and "number" in response.context["errors"]


def test_edit_and_delete(signed_in, api_ctx) -> None:
    number = new_number()
    signed_in.post("/dashboard/numbers", {"number": number, **picker("vapi")})
    listing = signed_in.get("/dashboard/numbers")
    assert [n["number"] for n in listing.context["numbers"]] == [number]
    assert listing.context["numbers"][0]["route_label"] == ("Vapi", "account assistant")
    changed = signed_in.post(
        f"/dashboard/numbers/{number}", {**picker("elevenlabs"), "description": "front desk"}
    )
    assert changed.status_code == 303
    assert stored_route(api_ctx, number) == {"socket_url": "elevenlabs"}
    assert signed_in.post(f"/dashboard/numbers/{number}/delete", csrf=False).status_code == 403
    assert signed_in.post(f"/dashboard/numbers/{number}/delete").status_code == 303
    assert stored_route(api_ctx, number) is None


def test_another_accounts_number_is_404_by_url(signed_in, api_ctx, other_tenant) -> None:
    number = new_number()
    api_ctx.repo.put(
        Number(number=number, account_id=other_tenant.account_id, route={"socket_url": "vapi"})
    )
    assert signed_in.get(f"/dashboard/numbers/{number}").status_code == 404
    assert signed_in.post(f"/dashboard/numbers/{number}", picker("elevenlabs")).status_code == 404
    assert signed_in.post(f"/dashboard/numbers/{number}/delete").status_code == 404
    assert stored_route(api_ctx, number) == {"socket_url": "vapi"}
    assert number not in signed_in.get("/dashboard/numbers").text


# --------------------------------------------------------------------------- extensions


def extension_form(**fields: str) -> dict[str, str]:
    name = fields.pop("extension", "101")
    return {
        "extension": name,
        "sip_username": fields.pop("sip_username", f"u{uuid.uuid4().hex[:10]}"),
        "password": fields.pop("password", "correct-horse-battery"),
        **picker(fields.pop("route_mode", "none")),
        **fields,
    }


def stored_extension(api_ctx, tenant, name: str) -> Extension | None:
    return api_ctx.repo.get(Extension, tenant.account_id, name, consistent=True)


def test_extension_create_edit_delete(signed_in, api_ctx, tenant) -> None:
    created = signed_in.post("/dashboard/extensions", extension_form())
    assert created.status_code == 303
    first = stored_extension(api_ctx, tenant, "101")
    assert first is not None and first.route is None
    edit = signed_in.get("/dashboard/extensions/101")
    assert edit.context["form"]["route_mode"] == "none"
    assert 'value="correct-horse-battery"' not in edit.text
    # An empty password keeps the stored digest.
    form = {**extension_form(sip_username=first.sip_username, password=""), **picker("vapi")}
    assert signed_in.post("/dashboard/extensions/101", form).status_code == 303
    second = stored_extension(api_ctx, tenant, "101")
    assert second.ha1_sha256 == first.ha1_sha256
    assert second.route.socket_url == "vapi"
    assert signed_in.post("/dashboard/extensions/101/delete").status_code == 303
    assert stored_extension(api_ctx, tenant, "101") is None


def test_a_refused_extension_does_not_echo_the_password(signed_in) -> None:
    response = signed_in.post("/dashboard/extensions", extension_form(password="short-but-9"))
    assert response.status_code == 422 and "password" in response.context["errors"]
    assert "short-but-9" not in response.text
    response = signed_in.post(
        "/dashboard/extensions", extension_form(password="long-enough-password", extension="x y")
    )
    assert response.status_code == 422 and "extension" in response.context["errors"]
    assert "long-enough-password" not in response.text


def test_another_accounts_extension_is_404(signed_in, make_browser, other_tenant) -> None:
    theirs = make_browser(other_tenant.key)
    assert theirs.post("/dashboard/extensions", extension_form(extension="555")).status_code == 303
    assert signed_in.get("/dashboard/extensions/555").status_code == 404
    assert signed_in.post("/dashboard/extensions/555/delete").status_code == 404
    assert theirs.get("/dashboard/extensions/555").status_code == 200
