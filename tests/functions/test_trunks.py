"""/api/trunks: carrier host, digest credentials (password masked), inbound sources, scoping."""

from __future__ import annotations

from typing import Any

import pytest

from shared.models import ApiKeyRole, Trunk

SECRET = "trunk-secret-0123"


def create(front, tenant, **fields: Any) -> Any:
    body = {"name": "Carrier A", "host": "sip.carrier.example", **fields}
    return front.request("POST", "/api/trunks", key=tenant.key, body=body)


def test_crud_round_trip_with_masked_password(front, tenant, api_ctx) -> None:
    reply = create(
        front,
        tenant,
        port=5080,
        transport="tcp",
        username="acme",
        password=SECRET,
        needs_registration=True,
        inbound_sources=["198.51.100.7", "203.0.113.0/24"],
        caller_id_number="+5511888888888",
    )
    assert reply.status == 201, reply.content
    body = reply.json()
    trunk_id = body["trunk_id"]
    assert trunk_id.startswith("trk_")
    assert {k: v for k, v in body.items() if not k.endswith("_at") and k != "trunk_id"} == {
        "name": "Carrier A",
        "host": "sip.carrier.example",
        "port": 5080,
        "transport": "tcp",
        "username": "acme",
        "password": "…0123",
        "needs_registration": True,
        "inbound_sources": ["198.51.100.7/32", "203.0.113.0/24"],
        "caller_id_number": "+5511888888888",
    }
    assert SECRET not in reply.content.decode()
    trunk = api_ctx.repo.get(Trunk, tenant.account_id, trunk_id, consistent=True)
    assert trunk is not None and trunk.password == SECRET

    assert front.request("GET", f"/api/trunks/{trunk_id}", key=tenant.key).json() == body
    listed = front.request("GET", "/api/trunks", key=tenant.key).json()
    assert listed == {"items": [body], "next_cursor": None}

    patched = front.request(
        "PATCH",
        f"/api/trunks/{trunk_id}",
        key=tenant.key,
        body={"port": 5060, "inbound_sources": [], "needs_registration": False},
    )
    assert patched.status == 200
    assert (patched.json()["port"], patched.json()["inbound_sources"]) == (5060, [])
    assert patched.json()["password"] == "…0123"  # untouched by a PATCH that omits it
    deleted = front.request("DELETE", f"/api/trunks/{trunk_id}", key=tenant.key)
    assert deleted.status == 204
    assert api_ctx.repo.get(Trunk, tenant.account_id, trunk_id, consistent=True) is None


def test_listing_shows_only_the_accounts_trunks_in_pages(front, new_tenant) -> None:
    mine, theirs = new_tenant(), new_tenant()
    ids = sorted(create(front, mine, name=f"t{i}").json()["trunk_id"] for i in range(3))
    create(front, theirs)
    first = front.request("GET", "/api/trunks", key=mine.key, query={"limit": "2"}).json()
    assert [t["trunk_id"] for t in first["items"]] == ids[:2]
    second = front.request(
        "GET", "/api/trunks", key=mine.key, query={"limit": "2", "cursor": first["next_cursor"]}
    ).json()
    assert [t["trunk_id"] for t in second["items"]] == ids[2:]
    stolen = front.request(
        "GET", "/api/trunks", key=theirs.key, query={"cursor": first["next_cursor"]}
    )
    assert stolen.status == 422 and stolen.error["field"] == "cursor"


def test_another_accounts_trunk_is_404(front, tenant, other_tenant, api_ctx) -> None:
    trunk_id = create(front, tenant).json()["trunk_id"]
    for method, body in (("GET", None), ("PATCH", {"port": 5070}), ("DELETE", None)):
        reply = front.request(method, f"/api/trunks/{trunk_id}", key=other_tenant.key, body=body)
        assert reply.status == 404, method
    trunk = api_ctx.repo.get(Trunk, tenant.account_id, trunk_id, consistent=True)
    assert trunk is not None and trunk.port == 5060


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"host": "bad host!"}, "host"),
        ({"host": "-lead.example"}, "host"),
        ({"port": 0}, "port"),
        ({"port": 70000}, "port"),
        ({"transport": "tls"}, "transport"),
        ({"inbound_sources": ["300.1.1.1"]}, "inbound_sources.0"),
        ({"password": "p"}, "username"),
        ({"username": "u"}, "password"),
        ({"needs_registration": True}, "username"),
        ({"caller_id_number": "abc"}, "caller_id_number"),
        ({"secret": "x"}, "secret"),
    ],
    ids=[
        "bad-host",
        "hyphen-host",
        "port-0",
        "port-big",
        "transport",
        "bad-cidr",
        "password-alone",
        "username-alone",
        "register-without-credentials",
        "caller-id",
        "unknown",
    ],
)
def test_errors_name_the_field(front, tenant, fields, field) -> None:
    reply = create(front, tenant, **fields)
    assert reply.status == 422, reply.content
    assert reply.error["field"] == field


def test_ip_hosts_and_nulls_on_patch(front, tenant) -> None:
    reply = create(front, tenant, host="[2001:db8::5]", username="u", password="p" * 10)
    assert reply.status == 201 and reply.json()["host"] == "2001:db8::5"
    trunk_id = reply.json()["trunk_id"]
    null_host = front.request(
        "PATCH", f"/api/trunks/{trunk_id}", key=tenant.key, body={"host": None}
    )
    assert null_host.status == 422 and null_host.error["field"] == "host"
    half = front.request(
        "PATCH", f"/api/trunks/{trunk_id}", key=tenant.key, body={"password": None}
    )
    assert half.status == 422 and half.error["field"] == "password"
    both = front.request(
        "PATCH",
        f"/api/trunks/{trunk_id}",
        key=tenant.key,
        body={"password": None, "username": None},
    )
    assert both.status == 200
    assert (both.json()["username"], both.json()["password"]) == (None, None)


def test_sample_events_round_trip(run_sample, tenant) -> None:
    created = run_sample("trunks_create.json", tenant.key)
    assert created.status == 201, created.content
    trunk_id = created.json()["trunk_id"]
    path = f"/api/trunks/{trunk_id}"
    assert run_sample("trunks_list.json", tenant.key).json()["items"] == [created.json()]
    assert run_sample("trunks_get.json", tenant.key, path=path).json() == created.json()
    assert run_sample("trunks_get.json", tenant.key).status == 404  # the sample's id is nobody's
    updated = run_sample("trunks_update.json", tenant.key, path=path)
    assert updated.status == 200
    assert (updated.json()["port"], updated.json()["transport"]) == (5080, "tcp")
    assert run_sample("trunks_delete.json", tenant.key, path=path).status == 204


# --------------------------------------------------------------------------- source widths


@pytest.mark.parametrize(
    ("sources", "index", "why"),
    [
        (["203.0.113.0/24", "10.0.0.0/8"], 1, "wider than /16 (IPv4)"),
        (["198.51.0.0/15"], 0, "wider than /16 (IPv4)"),
        (["2001:db8::/47"], 0, "wider than /48 (IPv6)"),
        (["0.0.0.0/0"], 0, "matches every address"),
        (["198.51.100.7", "::/0"], 1, "matches every address"),
        (["::ffff:0:0/96"], 0, "matches every address"),  # every IPv4 address, v4-mapped
        (["::ffff:10.0.0.0/104"], 0, "wider than /16 (IPv4)"),
    ],
    ids=[
        "v4-slash-8",
        "v4-slash-15",
        "v6-slash-47",
        "v4-any",
        "v6-any",
        "v4-mapped-any",
        "v4-mapped-8",
    ],
)
def test_an_account_key_cannot_trust_wide_sources(front, tenant, sources, index, why) -> None:
    reply = create(front, tenant, inbound_sources=sources)
    assert reply.status == 422, reply.content
    assert reply.error["field"] == f"inbound_sources.{index}"
    assert reply.error["message"].startswith(f"inbound_sources[{index}]: ")
    assert why in reply.error["message"]


def test_the_widest_sources_an_account_key_may_set(front, tenant) -> None:
    sources = ["198.51.0.0/16", "2001:db8:1::/48", "203.0.113.7"]
    reply = create(front, tenant, inbound_sources=sources)
    assert reply.status == 201, reply.content
    assert reply.json()["inbound_sources"] == ["198.51.0.0/16", "2001:db8:1::/48", "203.0.113.7/32"]


def test_a_wide_patch_is_refused_and_the_trunk_kept(front, tenant, api_ctx) -> None:
    trunk_id = create(front, tenant, inbound_sources=["203.0.113.0/24"]).json()["trunk_id"]
    for sources in (["10.0.0.0/8"], ["0.0.0.0/0"]):
        reply = front.request(
            "PATCH", f"/api/trunks/{trunk_id}", key=tenant.key, body={"inbound_sources": sources}
        )
        assert reply.status == 422 and reply.error["field"] == "inbound_sources.0"
    trunk = api_ctx.repo.get(Trunk, tenant.account_id, trunk_id, consistent=True)
    assert trunk is not None and trunk.inbound_sources == ["203.0.113.0/24"]


def test_an_admin_key_may_trust_wide_sources(front, new_tenant) -> None:
    admin = new_tenant(role=ApiKeyRole.ADMIN)
    reply = create(front, admin, inbound_sources=["10.0.0.0/8", "2001:db8::/32"])
    assert reply.status == 201, reply.content
    trunk_id = reply.json()["trunk_id"]
    patched = front.request(
        "PATCH", f"/api/trunks/{trunk_id}", key=admin.key, body={"inbound_sources": ["0.0.0.0/0"]}
    )
    assert patched.status == 200, patched.content
    assert patched.json()["inbound_sources"] == ["0.0.0.0/0"]
