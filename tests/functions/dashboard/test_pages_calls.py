"""Live calls, history (filters, pages, CSV), a call's detail, the overview and the fleet."""

from __future__ import annotations

import csv
import io
import uuid
import xml.etree.ElementTree as ET
from datetime import timedelta

from shared.clock import utc_now
from shared.models import Call, CallStatus, Direction, EdgeNode


def put_call(api_ctx, tenant, age_minutes: float = 1, **fields) -> Call:
    created = utc_now() - timedelta(minutes=age_minutes)
    call = Call(
        account_id=tenant.account_id,
        direction=fields.pop("direction", Direction.OUTBOUND),
        from_number=fields.pop("from_number", "+15550001111"),
        to_number=fields.pop("to_number", "+15550002222"),
        created_at=created,
        updated_at=created,
        **fields,
    )
    api_ctx.repo.put(call)
    return call


def test_live_calls_show_only_unended_calls_of_the_account(
    signed_in, api_ctx, tenant, other_tenant
) -> None:
    ringing = put_call(api_ctx, tenant, status=CallStatus.RINGING)
    put_call(api_ctx, tenant, status=CallStatus.COMPLETED)
    put_call(api_ctx, other_tenant, status=CallStatus.RINGING)
    page = signed_in.get("/dashboard/calls/live")
    assert page.status_code == 200 and page.template.name == "live_calls.html"
    assert [c["call_uuid"] for c in page.context["calls"]] == [str(ringing.call_uuid)]
    assert 'hx-trigger="every 2s, refresh"' in page.text and "data-pause-hidden" in page.text
    fragment = signed_in.get("/dashboard/calls/live", headers={"HX-Request": "true"})
    assert fragment.template.name == "_live_rows.html" and "<html" not in fragment.text


def test_hangup_from_the_row_cancels_a_queued_call(signed_in, api_ctx, tenant) -> None:
    call = put_call(api_ctx, tenant, status=CallStatus.QUEUED)
    response = signed_in.post(
        f"/dashboard/calls/{call.call_uuid}/hangup", headers={"HX-Request": "true"}
    )
    assert response.status_code == 200 and response.context["ok"], response.text
    stored = api_ctx.repo.get(Call, call.call_uuid, consistent=True)
    assert stored.status is CallStatus.CANCELED


def test_transfer_of_a_queued_call_is_refused_with_the_apis_reason(
    signed_in, api_ctx, tenant
) -> None:
    call = put_call(api_ctx, tenant, status=CallStatus.QUEUED)
    response = signed_in.post(
        f"/dashboard/calls/{call.call_uuid}/transfer",
        {"destination": "+15550003333"},
        headers={"HX-Request": "true"},
    )
    assert response.status_code == 409 and "still queued" in response.context["message"]


def test_commands_on_another_accounts_call_are_404(signed_in, api_ctx, other_tenant) -> None:
    call = put_call(api_ctx, other_tenant, status=CallStatus.QUEUED)
    assert signed_in.post(f"/dashboard/calls/{call.call_uuid}/hangup").status_code == 404
    assert api_ctx.repo.get(Call, call.call_uuid, consistent=True).status is CallStatus.QUEUED
    assert signed_in.get(f"/dashboard/calls/{call.call_uuid}").status_code == 404
    assert signed_in.get("/dashboard/calls/not-a-uuid").status_code == 404


def test_history_filters_and_pages(signed_in, api_ctx, tenant) -> None:
    inbound = put_call(
        api_ctx,
        tenant,
        direction=Direction.INBOUND,
        status=CallStatus.COMPLETED,
        from_number="+15557770000",
    )
    put_call(api_ctx, tenant, age_minutes=2, status=CallStatus.FAILED)
    old = put_call(api_ctx, tenant, age_minutes=60 * 24 * 3, status=CallStatus.COMPLETED)
    everything = signed_in.get("/dashboard/calls")
    assert len(everything.context["calls"]) == 3
    by_direction = signed_in.get("/dashboard/calls?direction=inbound")
    assert [c["call_uuid"] for c in by_direction.context["calls"]] == [str(inbound.call_uuid)]
    by_number = signed_in.get("/dashboard/calls?number=7770000")
    assert [c["call_uuid"] for c in by_number.context["calls"]] == [str(inbound.call_uuid)]
    by_status = signed_in.get("/dashboard/calls?status=failed")
    assert [c["status"] for c in by_status.context["calls"]] == ["failed"]
    today = utc_now().date().isoformat()
    recent = signed_in.get(f"/dashboard/calls?from={today}")
    assert str(old.call_uuid) not in {c["call_uuid"] for c in recent.context["calls"]}
    long_ago = (utc_now() - timedelta(days=3)).date().isoformat()
    only_old = signed_in.get(f"/dashboard/calls?from={long_ago}&to={long_ago}")
    assert [c["call_uuid"] for c in only_old.context["calls"]] == [str(old.call_uuid)]
    ignored = signed_in.get("/dashboard/calls?status=bogus&from=yesterday")
    assert ignored.status_code == 200 and len(ignored.context["calls"]) == 3


def test_history_pages_resume_where_the_last_stopped(
    signed_in, api_ctx, tenant, monkeypatch
) -> None:
    from functions.dashboard import pages_calls

    monkeypatch.setattr(pages_calls, "PAGE_SIZE", 2)
    made = [put_call(api_ctx, tenant, age_minutes=i + 1) for i in range(3)]
    first = signed_in.get("/dashboard/calls")
    assert len(first.context["calls"]) == 2 and first.context["next_query"]
    second = signed_in.get("/dashboard/calls?" + first.context["next_query"])
    seen = [c["call_uuid"] for c in first.context["calls"] + second.context["calls"]]
    assert seen == [str(c.call_uuid) for c in made]


def test_history_never_shows_another_accounts_calls(signed_in, api_ctx, other_tenant) -> None:
    theirs = put_call(api_ctx, other_tenant)
    assert str(theirs.call_uuid) not in signed_in.get("/dashboard/calls").text
    assert str(theirs.call_uuid) not in signed_in.get("/dashboard/calls.csv").text


def test_csv_export_has_the_filtered_rows_and_no_formulas(signed_in, api_ctx, tenant) -> None:
    put_call(api_ctx, tenant, from_number="=HYPERLINK(1)", direction=Direction.INBOUND)
    put_call(api_ctx, tenant, age_minutes=2)
    response = signed_in.get("/dashboard/calls.csv?direction=inbound")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    assert response.headers["content-disposition"].startswith("attachment;")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert len(rows) == 1 and rows[0]["from_number"] == "'=HYPERLINK(1)"
    assert rows[0]["to_number"] == "+15550002222"


def test_detail_has_timeline_media_bots_and_callbacks(signed_in, api_ctx, tenant) -> None:
    now = utc_now()
    call = put_call(
        api_ctx,
        tenant,
        status=CallStatus.COMPLETED,
        answered_at=now - timedelta(seconds=50),
        ended_at=now,
        duration=50,
        hangup_cause="NORMAL_CLEARING",
        media=[
            {
                "driver": "websocket",
                "target": "wss://bot.example.com/m",
                "started_at": now - timedelta(seconds=49),
                "ended_at": now,
            }
        ],
        stats={
            "packets_in": 2450,
            "lost": 50,
            "jitter_ms": 12.5,
            "pacing_error_p99_ms": 1.2,
            "bot_rtt_ms": 1200,
        },
        callback_attempts=[
            {
                "event_type": "call.answered",
                "attempt": 1,
                "at": (now - timedelta(seconds=49)).isoformat(),
                "status": "2xx",
                "reason": "delivered",
                "ms": 40.1,
            }
        ],
    )
    page = signed_in.get(f"/dashboard/calls/{call.call_uuid}")
    assert page.status_code == 200 and page.template.name == "call_detail.html"
    labels = [f[0] for f in page.context["figures"]]
    assert labels == ["Packet loss", "Jitter", "Pacing error p99", "Bot round trip"]
    assert page.context["figures"][0][1] == 2.0  # 50 lost of 2500
    timeline = ET.fromstring(str(page.context["timeline_svg"]))
    assert timeline.get("role") == "img"
    ns = "{http://www.w3.org/2000/svg}"
    assert len(timeline.findall(f"{ns}circle")) == 4  # created, answered, ended, one callback
    assert len(timeline.findall(f"{ns}rect")) == 1  # one bot connection
    bars = ET.fromstring(str(page.context["media_svg"]))
    red = [r for r in bars.findall(f"{ns}rect") if r.get("fill") == "#b42318"]
    assert [r.get("data-value") for r in red] == ["1200.0"]  # only the bot round trip is bad
    assert "wss://bot.example.com/m" in page.text and "delivered" in page.text


def test_overview_counts_the_last_day(signed_in, api_ctx, tenant) -> None:
    put_call(api_ctx, tenant, status=CallStatus.COMPLETED, answered_at=utc_now())
    put_call(api_ctx, tenant, age_minutes=5, status=CallStatus.FAILED)
    put_call(api_ctx, tenant, age_minutes=60 * 30, status=CallStatus.FAILED)  # older than a day
    page = signed_in.get("/dashboard/")
    assert page.context["split"] == {"answered": 1, "failed": 1, "other": 0}
    assert page.context["complete"] is True
    svg = ET.fromstring(str(page.context["per_hour_svg"]))
    counts = [int(r.get("data-count")) for r in svg.iter("{http://www.w3.org/2000/svg}rect")]
    assert sum(counts) == 2


def test_fleet_is_for_admin_keys(signed_in, make_browser, admin_tenant, api_ctx) -> None:
    node_id = f"node-{uuid.uuid4().hex[:6]}"
    api_ctx.repo.put(
        EdgeNode(
            node_id=node_id,
            queue_url="q",
            sip_address="203.0.113.5:5060",
            active_calls=3,
            heartbeat_at=utc_now() - timedelta(seconds=7),
            expires_at=utc_now() + timedelta(minutes=1),
        )
    )
    refused = signed_in.get("/dashboard/fleet")
    assert refused.status_code == 403 and node_id not in refused.text
    assert "Fleet" not in [item["label"] for item in signed_in.get("/dashboard/").context["nav"]]
    admin = make_browser(admin_tenant.key)
    page = admin.get("/dashboard/fleet")
    [node] = [n for n in page.context["nodes"] if n["node_id"] == node_id]
    assert (
        node["active_calls"] == 3
        and node["status"] == "active"
        and 6 <= node["heartbeat_age"] <= 60
    )
