"""API keys page: list, create (shown once), revoke; the REST API's rules apply."""

from __future__ import annotations

from shared.models import ApiKeyRole


def api_status(browser, key: str) -> int:
    return browser.client.get("/api/numbers", headers={"X-API-KEY": key}).status_code


def test_the_listing_shows_prefix_name_role_and_dates(signed_in, tenant) -> None:
    response = signed_in.get("/dashboard/keys")
    assert response.status_code == 200 and response.template.name == "keys.html"
    [key] = response.context["keys"]
    assert key["key_id"] == tenant.key_id
    assert set(key) >= {"prefix", "name", "role", "created_at", "last_used_at"}
    assert key["prefix"] in response.text and tenant.key not in response.text
    assert "this session's key" in response.text  # no revoke button for the own key


def test_a_created_key_is_shown_once_and_works(signed_in) -> None:
    created = signed_in.post("/dashboard/keys", {"name": "ci"})
    assert created.status_code == 200
    key = created.context["created"]["key"]
    assert key.startswith("sk_live_") and key in created.text
    assert 'data-copy="new-key"' in created.text
    assert api_status(signed_in, key) == 200
    again = signed_in.get("/dashboard/keys")
    assert key not in again.text and again.context["created"] is None
    assert {k["name"] for k in again.context["keys"]} == {"default", "ci"}


def test_the_name_is_validated_by_the_field(signed_in) -> None:
    response = signed_in.post("/dashboard/keys", {"name": ""})
    assert response.status_code == 422
    assert "name" in response.context["errors"]


def test_account_keys_cannot_make_admin_keys(signed_in) -> None:
    response = signed_in.post("/dashboard/keys", {"name": "sneaky", "role": "admin"})
    assert response.status_code == 200
    assert response.context["created"]["role"] == ApiKeyRole.ACCOUNT


def test_admin_keys_can(make_browser, admin_tenant) -> None:
    admin = make_browser(admin_tenant.key)
    response = admin.post("/dashboard/keys", {"name": "ops", "role": "admin"})
    assert response.context["created"]["role"] == ApiKeyRole.ADMIN


def test_revoke_removes_the_key_and_it_stops_working(signed_in, tenant, new_key) -> None:
    other = new_key(tenant)
    assert api_status(signed_in, other.key) == 200
    response = signed_in.post(f"/dashboard/keys/{other.key_id}/revoke")
    assert response.status_code == 200
    assert other.key_id not in {k["key_id"] for k in response.context["keys"]}
    assert api_status(signed_in, other.key) == 401


def test_revoke_needs_csrf(signed_in, tenant, new_key) -> None:
    other = new_key(tenant)
    response = signed_in.post(f"/dashboard/keys/{other.key_id}/revoke", csrf=False)
    assert response.status_code == 403
    assert api_status(signed_in, other.key) == 200


def test_the_session_key_cannot_revoke_itself(signed_in, tenant) -> None:
    response = signed_in.post(f"/dashboard/keys/{tenant.key_id}/revoke")
    assert response.status_code == 409
    assert "cannot revoke itself" in response.context["errors"][""]


def test_another_accounts_key_is_not_found_and_keeps_working(signed_in, other_tenant) -> None:
    response = signed_in.post(f"/dashboard/keys/{other_tenant.key_id}/revoke")
    assert response.status_code == 404 and response.template.name == "error.html"
    assert api_status(signed_in, other_tenant.key) == 200
    listing = signed_in.get("/dashboard/keys")
    assert other_tenant.key_id not in listing.text
