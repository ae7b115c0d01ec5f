"""ApiRequests / ApiErrors as EMF with low-cardinality dimensions; one log line with account_id."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from mangum import Mangum

from functions.api.app import create_app
from functions.context import Context
from shared.settings import Settings


def emitted(out: str, caplog: pytest.LogCaptureFixture) -> tuple[list[Any], list[dict[str, Any]]]:
    """(EMF metric lines printed to stdout, fields of the request log lines)."""
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    logs = [
        {name: getattr(record, name, None) for name in ("route", "path", "status", "account_id")}
        for record in caplog.records
        if record.getMessage() == "api request"
    ]
    caplog.clear()
    return [x for x in lines if "_aws" in x], logs


@pytest.fixture
def metrics_on(monkeypatch: pytest.MonkeyPatch, aws: Any) -> None:
    monkeypatch.delenv("POWERTOOLS_METRICS_DISABLED", raising=False)


def test_success_and_error_are_counted_by_route_template(
    metrics_on, run_sample, tenant, capfd, caplog
) -> None:
    capfd.readouterr()
    number = "+1555" + str(uuid.uuid4().int)[:7]
    ok = run_sample("numbers_list.json", tenant.key)
    missing = run_sample("numbers_get.json", tenant.key, path=f"/api/numbers/{number}")
    assert (ok.status, missing.status) == (200, 404)
    metrics, logs = emitted(capfd.readouterr().out, caplog)
    assert [m["route"] for m in metrics] == ["GET /api/numbers", "GET /api/numbers/{number}"]
    first, second = metrics
    definition = first["_aws"]["CloudWatchMetrics"][0]
    assert definition["Namespace"] == "AgeraVoiceGateway"
    assert definition["Dimensions"] == [["route", "status_class"]]
    assert [m["Name"] for m in definition["Metrics"]] == ["ApiRequests"]
    assert (first["status_class"], first["ApiRequests"]) == ("2xx", [1.0])
    assert "ApiErrors" not in first
    assert (second["status_class"], second["ApiRequests"], second["ApiErrors"]) == (
        "4xx",
        [1.0],
        [1.0],
    )
    assert number not in json.dumps(metrics)  # never a per-request value as a dimension
    assert [(log["route"], log["status"], log["account_id"]) for log in logs] == [
        ("GET /api/numbers", 200, tenant.account_id),
        ("GET /api/numbers/{number}", 404, tenant.account_id),
    ]
    assert logs[1]["path"] == f"/api/numbers/{number}"


def test_unauthenticated_and_unmatched_requests_are_counted(
    metrics_on, run_sample, capfd, caplog
) -> None:
    capfd.readouterr()
    assert run_sample("numbers_list.json", None).status == 401
    assert run_sample("numbers_list.json", None, path="/api/nowhere").status == 404
    metrics, logs = emitted(capfd.readouterr().out, caplog)
    assert [(m["route"], m["status_class"], m["ApiErrors"]) for m in metrics] == [
        ("GET /api/numbers", "4xx", [1.0]),
        ("GET unmatched", "4xx", [1.0]),
    ]
    assert [log["account_id"] for log in logs] == [None, None]


def test_unhandled_errors_are_counted_as_5xx(
    metrics_on, mangum_loop, make_event, tenant, capfd, caplog
):
    broken = Context(Settings.load(table_name="no-such-table", api_key_cache_seconds=0))
    handler = Mangum(create_app(lambda: broken), lifespan="off")
    capfd.readouterr()
    response = handler(make_event("account_get.json", tenant.key), object())
    assert response["statusCode"] == 500
    assert json.loads(response["body"]) == {
        "error": {"code": "internal_error", "message": "internal error"}
    }
    metrics, logs = emitted(capfd.readouterr().out, caplog)
    assert [(m["route"], m["status_class"]) for m in metrics] == [("GET /api/account", "5xx")]
    assert logs[0]["status"] == 500


def test_nothing_is_printed_when_metrics_are_disabled(run_sample, tenant, capfd, caplog) -> None:
    capfd.readouterr()
    assert run_sample("numbers_list.json", tenant.key).status == 200
    metrics, logs = emitted(capfd.readouterr().out, caplog)
    assert metrics == [] and len(logs) == 1
