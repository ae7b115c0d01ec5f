"""What one account-slot acquire (a three-item TransactWriteItems) costs on the local stack's moto,
as the table fills with call records: moto's whole-table backup against the per-item one.

Run: .venv/bin/python bench/moto_transactions.py [--items 0 1000 4000] [--acquires 200]

For each table size, in a fresh moto child per mode (infra/moto_process.py, ``stock`` = moto's
own ``TransactWriteItems``, ``items`` = the backup of just the written items this project runs):
the table gets ``--items`` call-record-sized items, then ``--acquires`` slots are taken and given
back one after another (shared/call_slots.py, the same code a call's setup runs). Printed: the
acquire's p50 / p99 / max in milliseconds. Every call's setup on ``agera dev`` and in
bench/calls.py waits for one acquire, and moto runs DynamoDB writes one at a time, so this time
also holds up every other write of the stack.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import boto3

from infra.local_aws import apply_env, aws_env, provision
from infra.moto_process import MotoProcess
from shared import call_slots
from shared.models import AccountLimits

HOST = "127.0.0.1"
RECORD = {f"field{i}": {"S": "x" * 40} for i in range(30)}  # about a call record's size


def measure(stock: bool, items: int, acquires: int) -> list[float]:
    moto = MotoProcess(HOST, 0, stock_transactions=stock)
    endpoint = moto.start()
    try:
        apply_env(aws_env(endpoint))
        table = provision(endpoint, stack_name="agera-bench-tx").table_name
        client = boto3.client("dynamodb", endpoint_url=endpoint)
        for n in range(items):
            item = {"pk": {"S": f"CALL#{n}"}, "sk": {"S": "CALL"}, **RECORD}
            client.put_item(TableName=table, Item=item)
        limits = AccountLimits(max_concurrent_calls=10, calls_per_second=1000)
        times = []
        for _ in range(acquires):
            call = uuid.uuid4()
            started = time.perf_counter()
            refused = call_slots.acquire(client, table, "acc_bench", call, limits)
            times.append((time.perf_counter() - started) * 1000)
            assert refused is None, refused
            call_slots.release(client, table, "acc_bench", call)
        return times
    finally:
        moto.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--items", type=int, nargs="+", default=[0, 1000, 4000])
    parser.add_argument("--acquires", type=int, default=200)
    args = parser.parse_args()
    print(f"{'items in table':>15} {'backup':>8} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for items in args.items:
        for stock in (True, False):
            times = sorted(measure(stock, items, args.acquires))
            p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
            print(
                f"{items:>15} {'table' if stock else 'items':>8} "
                f"{statistics.median(times):>8.2f} {p99:>8.2f} {times[-1]:>8.2f}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
