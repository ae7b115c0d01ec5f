"""NodeMetrics: the EMF lines it writes to stdout, parsed back (names, units, values, dimensions)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from edge_media.control.metrics import NodeMetrics


def emf_lines(capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    out = capsys.readouterr().out
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def definitions(line: dict[str, Any]) -> tuple[str, list[list[str]], dict[str, str]]:
    [block] = line["_aws"]["CloudWatchMetrics"]
    units = {m["Name"]: m["Unit"] for m in block["Metrics"]}
    return block["Namespace"], block["Dimensions"], units


@pytest.fixture
def enabled(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "false")
    monkeypatch.delenv("POWERTOOLS_DEV", raising=False)


def test_one_line_per_flush_with_names_units_values_and_dimensions(
    enabled: None, capsys: pytest.CaptureFixture[str]
) -> None:
    metrics = NodeMetrics(node_id="node-7")
    metrics.call_setup_ms(42.5)
    metrics.call_setup_ms(8)
    metrics.routing_webhook_ms(120)
    metrics.bot_connect_ms(35)
    metrics.rtp_loss_pct(0.25)
    metrics.pacing_error_ms(1.5)
    metrics.active_calls(12)
    assert metrics.pending == 7
    metrics.flush()
    [line] = emf_lines(capsys)
    namespace, dimensions, units = definitions(line)
    assert namespace == "Agera"
    assert dimensions == [["service"]]
    assert line["service"] == "edge-node"
    assert line["node_id"] == "node-7"  # a property of the line, not a dimension
    assert units == {
        "CallSetupMs": "Milliseconds",
        "RoutingWebhookMs": "Milliseconds",
        "BotConnectMs": "Milliseconds",
        "RtpLossPct": "Percent",
        "PacingErrorMs": "Milliseconds",
        "ActiveCalls": "Count",
    }
    assert line["CallSetupMs"] == [42.5, 8.0]
    assert (line["RoutingWebhookMs"], line["BotConnectMs"]) == ([120.0], [35.0])
    assert (line["RtpLossPct"], line["PacingErrorMs"], line["ActiveCalls"]) == (
        [0.25],
        [1.5],
        [12.0],
    )
    assert metrics.pending == 0


def test_a_second_flush_keeps_the_node_and_carries_only_new_values(
    enabled: None, capsys: pytest.CaptureFixture[str]
) -> None:
    metrics = NodeMetrics(node_id="node-7")
    metrics.active_calls(1)
    metrics.flush()
    metrics.flush()  # nothing pending: no line, no warning
    metrics.active_calls(2)
    metrics.flush()
    lines = emf_lines(capsys)
    assert [line["ActiveCalls"] for line in lines] == [[1.0], [2.0]]
    assert [line["node_id"] for line in lines] == ["node-7", "node-7"]
    assert metrics.flushes == 2


def test_per_node_dimension_and_other_namespace(
    enabled: None, capsys: pytest.CaptureFixture[str]
) -> None:
    metrics = NodeMetrics("AgeraTest", "edge-test", node_id="node-9", per_node_dimension=True)
    metrics.bot_connect_ms(10)
    metrics.flush()
    [line] = emf_lines(capsys)
    namespace, dimensions, _ = definitions(line)
    assert (namespace, dimensions) == ("AgeraTest", [["node_id", "service"]])
    assert (line["node_id"], line["service"]) == ("node-9", "edge-test")


def test_the_hundredth_value_writes_a_line_by_itself(
    enabled: None, capsys: pytest.CaptureFixture[str]
) -> None:
    metrics = NodeMetrics(node_id="node-7")
    for n in range(150):
        metrics.pacing_error_ms(n / 10)
    [line] = emf_lines(capsys)  # Powertools' own flush at 100 values
    assert line["PacingErrorMs"] == [n / 10 for n in range(100)]
    assert metrics.pending == 50
    metrics.flush()
    [rest] = emf_lines(capsys)
    assert rest["PacingErrorMs"] == [n / 10 for n in range(100, 150)]
    assert rest["node_id"] == "node-7"


def test_non_finite_values_are_dropped(enabled: None, capsys: pytest.CaptureFixture[str]) -> None:
    metrics = NodeMetrics(node_id="node-7")
    metrics.rtp_loss_pct(float("nan"))
    metrics.pacing_error_ms(float("inf"))
    metrics.rtp_loss_pct(1.0)
    metrics.flush()
    [line] = emf_lines(capsys)
    assert line["RtpLossPct"] == [1.0]
    assert "PacingErrorMs" not in line


def test_disabled_writes_nothing_even_at_a_hundred_values(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "true")
    metrics = NodeMetrics(node_id="node-7")
    for _ in range(250):
        metrics.call_setup_ms(5)
    metrics.flush()
    assert capsys.readouterr().out == ""
    assert metrics.disabled and metrics.pending == 0


@pytest.mark.anyio
async def test_the_flush_task_writes_periodically_and_stop_writes_the_rest(
    enabled: None, capsys: pytest.CaptureFixture[str]
) -> None:
    metrics = NodeMetrics(node_id="node-7", flush_seconds=0.05)
    metrics.start()
    metrics.active_calls(3)
    for _ in range(200):  # bounded: up to 10 s
        if metrics.flushes:
            break
        await asyncio.sleep(0.05)
    assert metrics.flushes >= 1
    metrics.active_calls(4)
    await metrics.stop()
    lines = emf_lines(capsys)
    assert [value for line in lines for value in line["ActiveCalls"]] == [3.0, 4.0]


def test_each_calls_media_figures_are_one_value_per_call_of_their_own_metric(
    enabled: None, capsys: pytest.CaptureFixture[str]
) -> None:
    metrics = NodeMetrics(node_id="node-7")
    for call in range(3):  # three calls end: each adds one value to each distribution
        metrics.rtp_to_bot_ms(0.1 + call)
        metrics.bot_to_wire_ms(18.0)
        metrics.call_pacing_error_ms(1.25)
        metrics.rtp_jitter_ms(0.5)
        metrics.playout_underruns(call)
        metrics.barge_in_stop_ms(12.0)
        metrics.bot_rtt_ms(30.0)
    metrics.flush()
    [line] = emf_lines(capsys)
    _, _, units = definitions(line)
    assert units == {
        "RtpToBotMs": "Milliseconds",
        "BotToWireMs": "Milliseconds",
        "CallPacingErrorMs": "Milliseconds",  # the node-wide PacingErrorMs keeps its meaning
        "RtpJitterMs": "Milliseconds",
        "PlayoutUnderruns": "Count",
        "BargeInStopMs": "Milliseconds",
        "BotRttMs": "Milliseconds",
    }
    assert line["RtpToBotMs"] == [0.1, 1.1, 2.1]
    assert line["PlayoutUnderruns"] == [0.0, 1.0, 2.0]
    assert line["BargeInStopMs"] == [12.0, 12.0, 12.0]
