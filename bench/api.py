"""Latency of the REST API on the local stack, and the Lambda handler's import time.

Usage: python bench/api.py [requests]   (default 1000 of each)

What runs, all in this process and on 127.0.0.1, like ``agera dev``: moto (DynamoDB + SQS) with the
template's table and queues, and the API under uvicorn (uvloop). The load comes from a separate
process, as it would from curl or a bot platform: one keep-alive HTTP client sending requests one
at a time. Measured per request, client-side, with perf_counter:

- ``POST /api/calls``: auth (key cache warm), body validation, SSRF check of an IP-literal
  ``socket_url``, PutItem of the call, SendMessage of the originate command.
- ``POST /api/calls`` with ``Idempotency-Key`` (a new key each time): plus Powertools' claim
  (conditional PutItem) and its completion (UpdateItem).
- ``GET /api/calls/{id}``: auth, one consistent GetItem.

moto answers in this same process, so its work (and the GIL it holds) is inside these figures; on
AWS the table and queue answer from elsewhere. The originate queue is drained every 10 requests,
untimed, as edge nodes would consume it (moto's SendMessage slows down with queue depth). Logs are written as in production (JSON, INFO) but
to /dev/null, so the terminal's speed is not measured. Import time is the median of fresh
interpreters timing ``import functions.api.handler`` (what Lambda pays at a cold start).
Budget (docs/performance.md): API p99 ≤ 15 ms locally, handler import ≤ 300 ms.
"""

from __future__ import annotations

import gc
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
WARMUP = 50
IMPORT_RUNS = 7
P99_BUDGET_MS = 15.0
IMPORT_BUDGET_MS = 300.0
START_TIMEOUT_SECONDS = 30.0
CLIENT_TIMEOUT_SECONDS = 900
DRAIN_EVERY = 10
IMPORT_PROBE = (
    "import time; t = time.perf_counter(); import functions.api.handler; "
    "print((time.perf_counter() - t) * 1000)"
)


def _percentiles(samples_ms: list[float]) -> tuple[float, float, float]:
    ordered = sorted(samples_ms)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return statistics.median(ordered), p99, ordered[-1]


def _measure(
    send: Callable[[int], None], count: int, between: Callable[[int], None] | None = None
) -> list[float]:
    """Time ``send(i)`` one at a time; ``between(i)`` runs untimed after each request."""
    for i in range(WARMUP):
        send(i)
    samples = []
    clock = time.perf_counter
    gc.collect()
    for i in range(count):
        started = clock()
        send(i)
        samples.append((clock() - started) * 1000)
        if between is not None:
            between(i)
    return samples


def import_times(runs: int = IMPORT_RUNS) -> list[float]:
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    times = []
    for _ in range(runs):
        out = subprocess.run(
            [sys.executable, "-c", IMPORT_PROBE],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout
        times.append(float(out.strip().splitlines()[-1]))
    return times


def _start_stack() -> tuple[Any, Any, str, str]:
    """moto + provisioned resources + uvicorn; returns (moto, server, base_url, api_key)."""
    from infra.local_aws import MotoServer, apply_env, aws_env, provision

    moto = MotoServer("127.0.0.1", 0)
    endpoint = moto.start()
    apply_env(aws_env(endpoint))
    resources = provision(endpoint, stack_name=f"agera-bench-{uuid.uuid4().hex[:6]}")
    apply_env(resources.settings_env())
    apply_env(
        {
            "AGERA_SSRF_ALLOW_LIST": "127.0.0.0/8,::1/128",
            "POWERTOOLS_SERVICE_NAME": "agera-bench",
            "POWERTOOLS_METRICS_DISABLED": "1",
        }
    )
    # Logger handlers bind the stream they are created with: create them on /dev/null, which
    # stays open for the life of the process.
    real_stdout = sys.stdout
    sys.stdout = open(os.devnull, "w")  # noqa: SIM115
    try:
        import uvicorn

        from functions.api.app import create_app
        from functions.context import reset_default_context
        from infra.bootstrap import bootstrap_default_account
        from infra.local_aws import sealing_repository
        from shared.models import Account
        from shared.settings import Settings
    finally:
        sys.stdout = real_stdout
    reset_default_context()
    settings = Settings.load()
    repo = sealing_repository(settings)  # the account's webhook secret is stored sealed
    boot = bootstrap_default_account(repo)
    # The bench originates far past the default limits (10 calls/s, 100 live) and no node ever
    # takes its calls: lift them, so every request is measured doing the full work (slot included).
    repo.update(
        Account,
        (boot.account.account_id,),
        {"limits": {"max_concurrent_calls": 100_000, "calls_per_second": 1000}},
    )
    config = uvicorn.Config(
        create_app(),
        host="127.0.0.1",
        port=0,
        lifespan="off",
        log_level="warning",
        access_log=False,
    )
    server = uvicorn.Server(config)
    threading.Thread(target=server.run, daemon=True).start()
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)
    if not server.started:
        raise SystemExit("uvicorn did not start")
    port = server.servers[0].sockets[0].getsockname()[1]
    return moto, server, f"http://127.0.0.1:{port}", boot.api_key


def run_client(base: str, api_key: str, count: int) -> dict[str, list[float]]:
    """The load: one keep-alive client, one request at a time (runs in its own process)."""
    import boto3
    import httpx

    body = {
        "destination_number": "5511999999999",
        "caller_id_number": "5511888888888",
        "caller_id_name": "Bench",
        "socket_url": "ws://127.0.0.1:9/bot",
    }
    created: list[str] = []
    # Stands in for the edge nodes that take originate commands: moto's SendMessage slows down
    # linearly with the depth of the queue (real SQS does not), so keep it near empty, untimed.
    sqs = boto3.session.Session().client("sqs")
    queue_url = os.environ["AGERA_ORIGINATE_QUEUE_URL"]

    def drain(i: int) -> None:
        if i % DRAIN_EVERY != DRAIN_EVERY - 1:
            return
        for _ in range(DRAIN_EVERY):  # bounded: at most DRAIN_EVERY batches
            got = sqs.receive_message(
                QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0
            ).get("Messages", [])
            if not got:
                return
            sqs.delete_message_batch(
                QueueUrl=queue_url,
                Entries=[
                    {"Id": str(n), "ReceiptHandle": m["ReceiptHandle"]} for n, m in enumerate(got)
                ],
            )

    with httpx.Client(base_url=base, headers={"X-API-KEY": api_key}, timeout=10) as client:

        def originate(_: int) -> None:
            response = client.post("/api/calls", json=body)
            if response.status_code != 201:
                raise SystemExit(f"POST /api/calls: {response.status_code} {response.text}")
            created.append(response.json()["call_uuid"])

        def originate_keyed(_: int) -> None:
            response = client.post(
                "/api/calls", json=body, headers={"Idempotency-Key": uuid.uuid4().hex}
            )
            if response.status_code != 201:
                raise SystemExit(f"POST /api/calls (keyed): {response.status_code}")

        def read(i: int) -> None:
            response = client.get(f"/api/calls/{created[i % len(created)]}")
            if response.status_code != 200:
                raise SystemExit(f"GET /api/calls/{{id}}: {response.status_code}")

        return {
            "POST /api/calls": _measure(originate, count, drain),
            "POST /api/calls + Idempotency-Key": _measure(originate_keyed, count, drain),
            "GET /api/calls/{id}": _measure(read, count),
        }


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--client":
        print(json.dumps(run_client(sys.argv[2], sys.argv[3], int(sys.argv[4]))))
        return
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    moto, server, base, api_key = _start_stack()
    try:
        # The client is another process, as curl or a bot platform would be: its CPU and GIL
        # are not the API's.
        out = subprocess.run(
            [sys.executable, __file__, "--client", base, api_key, str(count)],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=False,
            timeout=CLIENT_TIMEOUT_SECONDS,
        )
    finally:
        server.should_exit = True
        moto.stop()
    if out.returncode != 0:
        raise SystemExit(f"client failed: {out.stderr.strip() or out.stdout.strip()}")
    results: dict[str, list[float]] = json.loads(out.stdout.strip().splitlines()[-1])
    imports = import_times()

    print(f"local stack: moto + uvicorn in one process; {count} sequential requests each from")
    print("a client process (one keep-alive connection)")
    worst_p99 = 0.0
    for label, samples in results.items():
        p50, p99, worst = _percentiles(samples)
        worst_p99 = max(worst_p99, p99)
        print(f"{label:36} p50 {p50:6.2f} ms   p99 {p99:6.2f} ms   max {worst:7.2f} ms")
    median_import = statistics.median(imports)
    print(
        f"{'import functions.api.handler':36} median {median_import:6.1f} ms   "
        f"min {min(imports):6.1f} ms   ({len(imports)} fresh interpreters)"
    )
    print(
        f"budget: p99 <= {P99_BUDGET_MS:.0f} ms: {'ok' if worst_p99 <= P99_BUDGET_MS else 'OVER'};"
        f" import <= {IMPORT_BUDGET_MS:.0f} ms: "
        f"{'ok' if median_import <= IMPORT_BUDGET_MS else 'OVER'}"
    )


if __name__ == "__main__":
    main()
