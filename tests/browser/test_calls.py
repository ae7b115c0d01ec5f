"""A real call seen in chromium: ``agera call`` dials a number routed to examples/echo_bot.py
through an edge node; the call shows up under Live calls by itself (htmx polls every 2 s, the
page is never reloaded), leaves it when it ends, and is in the history with its detail page."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Frame, expect

from functions.context import Context
from shared.models import Call, CallStatus, Number, Route
from tests.browser.conftest import WAIT_MS, Tenant, Ui
from tests.browser.stack import EchoBot, agera_call, wait_until, workers
from tests.interop.edge import EdgeNode
from tests.interop.gateway import new_number
from tests.interop.ports import free_udp_range

expect.set_options(timeout=WAIT_MS)
# The workers flush their metrics after each batch; with metrics off (the ``aws`` fixture) a batch
# that recorded none makes Powertools warn, which the suite's warnings-as-errors would turn into a
# failed batch in the pollers' threads.
pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish:UserWarning")
CALLER = "+15550100"
TALK_SECONDS = 6  # long enough for at least two refreshes of the live page while it lasts
CALL_SECONDS = 30  # the phone's whole run, start-up included


@pytest.fixture
def echo_bot() -> Iterator[EchoBot]:
    bot = EchoBot()
    try:
        yield bot
    finally:
        bot.close()


@pytest.fixture
def edge(ctx: Context, tmp_path: Path) -> Iterator[EdgeNode]:
    """``agera edge`` publishing to the template's events queue (the ``aws`` environment), with
    the workers behind it, as ``agera dev`` wires them. The node has a process to itself, as
    deployed: in this one its event loop would share the GIL with the browser driver and the
    server, and a lag past ``max_loop_lag_ms`` makes a node refuse calls. That guard stays on,
    with room for a machine busy running chromium and another test worker."""
    settings = {
        "AGERA_MAX_LOOP_LAG_MS": "500",
        "AGERA_ORIGINATE_POLL_SECONDS": "1",  # stopping waits for the poll in flight
    }
    node = EdgeNode(tmp_path / "edge", max_calls=4, env=settings)
    with workers(ctx):
        try:
            node.start()
            yield node
        finally:
            code = node.stop()
    assert code == 0, f"agera edge exited {code}; its log: {tmp_path / 'edge' / 'edge.log'}"


def finish(phone: subprocess.Popen[str]) -> tuple[int, str, str]:
    try:
        out, err = phone.communicate(timeout=CALL_SECONDS)
    except subprocess.TimeoutExpired:
        phone.kill()
        out, err = phone.communicate(timeout=5)
        raise AssertionError(f"agera call did not finish in {CALL_SECONDS} s: {out}{err}") from None
    return phone.returncode, out, err


def test_a_call_appears_live_then_in_the_history_with_its_detail(
    ui: Ui, tenant: Tenant, ctx: Context, edge: EdgeNode, echo_bot: EchoBot
) -> None:
    number = new_number()
    ctx.repo.put(
        Number(
            number=number,
            account_id=tenant.account_id,
            route=Route(socket_url=echo_bot.url),
            description="echo",
        )
    )
    page = ui.page
    ui.sign_in(tenant.key)
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Live calls").click()
    expect(page.get_by_role("heading", name="Live calls")).to_be_visible()
    expect(page.get_by_role("cell", name="No calls in progress.")).to_be_visible()
    ui.shot("live-calls-empty")
    live_url = page.url
    navigations: list[str] = []

    def navigated(frame: Frame) -> None:
        if frame == page.main_frame:
            navigations.append(frame.url)

    page.on("framenavigated", navigated)

    phone = agera_call(
        f"sip:{number}@{edge.address}",
        "--hangup-after",
        str(TALK_SECONDS),
        "--from",
        CALLER,
        rtp_ports=free_udp_range(4),
    )
    try:
        # The row arrives with a refresh of the fragment, not a reload of the page.
        row = page.locator("#live-calls tr[data-call]")
        expect(row).to_have_count(1, timeout=CALL_SECONDS * 1000)
        expect(row).to_contain_text(number)
        expect(row).to_contain_text(CALLER)
        expect(row).to_contain_text("inbound")
        expect(row.get_by_role("link", name=CallStatus.IN_PROGRESS.value)).to_be_visible()
        expect(page.get_by_role("table").locator("caption")).to_have_text("1 call in progress")
        call_uuid = row.get_attribute("data-call")
        assert call_uuid
        ui.shot("live-calls-in-progress")
        live = ctx.repo.get(Call, call_uuid, consistent=True)
        assert live is not None and live.status is CallStatus.IN_PROGRESS
        assert (live.account_id, live.to_number) == (tenant.account_id, number)

        code, out, err = finish(phone)
    finally:
        if phone.poll() is None:
            phone.kill()
            phone.wait(5)
    assert (code, err) == (0, ""), out + err
    assert f"hanging up after {TALK_SECONDS:g} s" in out.splitlines()

    # Ended: the next refresh empties the table, still without a reload.
    expect(page.locator("#live-calls tr[data-call]")).to_have_count(0)
    expect(page.get_by_role("cell", name="No calls in progress.")).to_be_visible()
    assert (page.url, navigations) == (live_url, []), "the live page was reloaded"
    ui.shot("live-calls-ended")
    ended: Any = wait_until(
        lambda: (c := ctx.repo.get(Call, call_uuid, consistent=True)) and c.status.terminal and c,
        "the call record to end",
    )
    assert ended.status is CallStatus.COMPLETED
    assert ended.hangup_cause == "NORMAL_CLEARING"
    assert ended.media and ended.media[-1].target == echo_bot.url

    page.get_by_role("navigation", name="Main").get_by_role("link", name="Call history").click()
    expect(page.get_by_role("heading", name="Call history")).to_be_visible()
    row = page.get_by_role("row").filter(has_text=number)
    expect(row).to_have_count(1)
    expect(row).to_contain_text(CALLER)
    expect(row).to_contain_text(CallStatus.COMPLETED.value)
    expect(row).to_contain_text("NORMAL_CLEARING")
    ui.shot("call-history")

    row.get_by_role("link").click()
    expect(page).to_have_url(ui.url(f"/dashboard/calls/{call_uuid}"))
    expect(page.get_by_role("heading", level=1)).to_contain_text(call_uuid)
    # The timeline: the chart and its events in order.
    expect(page.locator("figure", has_text="Timeline").locator("svg")).to_be_visible()
    events = page.get_by_role("heading", name="Events").locator("xpath=following-sibling::ol[1]")
    expect(events.get_by_role("listitem")).to_contain_text(
        [
            re.compile(r"created$"),
            re.compile(r"answered$"),
            re.compile(r"ended \(NORMAL_CLEARING\)$"),
        ]
    )
    # The media figures: the chart and the table of what the node measured.
    media = page.locator("figure", has_text="Media figures")
    expect(media.locator("svg")).to_be_visible()
    expect(media).not_to_contain_text("No media figures recorded")
    figures = page.get_by_role("heading", name="Media statistics").locator(
        "xpath=following-sibling::div[1]//tbody/tr"
    )
    expect(figures.first).to_be_visible()
    labels = [cell.split("\t")[0] for cell in figures.all_inner_texts()]
    assert "Jitter" in labels, labels
    bots = page.get_by_role("heading", name="Bot connections").locator(
        "xpath=following-sibling::div[1]//tbody"
    )
    expect(bots).to_contain_text(echo_bot.url)
    ui.shot("call-detail")
