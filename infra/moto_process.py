"""moto in a process of its own: the test suite's and the benchmarks' local AWS.

Why not in the caller's process: moto keeps every item and message as
Python objects, a dozen per attribute. Over the suite's few thousand tests that is over ten
million objects, and each full collection of the cyclic garbage collector walks all of them: a
pause of seconds, during which an edge node running in the same process misses its 2 s route
lookup deadline and its 20 ms RTP ticks. The same objects also hold the GIL while moto works. In a
child process moto's heap is only moto's problem, and here it is kept cheap too: every few seconds
what survived a collection is frozen (``gc.freeze``), so later collections walk only the objects
made since, never the growing store. ``agera dev`` runs it this way too. Two fixes of moto's
own make it fit for long runs: DynamoDB requests are serialised where moto is not thread-safe,
and a transaction backs up only the items it writes, not the whole table.

The child reads its standard input until EOF, so it ends with its parent however that ends.

Run: ``python -m infra.moto_process 127.0.0.1 0`` prints ``port N`` once serving.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import IO, Any

from infra.local_aws import REPO_ROOT, LocalStackError

__all__ = ["MotoProcess", "main"]

FREEZE_EVERY_SECONDS = 5.0
START_SECONDS = 60.0


class MotoProcess:
    """A moto server in a child process on a loopback port (0 = pick a free one)."""

    def __init__(
        self, host: str = "127.0.0.1", port: int = 0, *, stock_transactions: bool = False
    ) -> None:
        """``stock_transactions``: moto's own whole-table backups (bench/moto_transactions.py
        compares the two)."""
        self.host = host
        self.port = port
        self.stock_transactions = stock_transactions
        self._child: subprocess.Popen[str] | None = None

    def start(self) -> str:
        """Start the child and wait until it serves; returns the endpoint URL."""
        child = subprocess.Popen(  # noqa: S603 (our own interpreter and module)
            [sys.executable, "-m", "infra.moto_process", self.host, str(self.port)]
            + (["--stock-transactions"] if self.stock_transactions else []),
            cwd=REPO_ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self._child = child
        assert child.stdout is not None
        line = _read_line(child.stdout, START_SECONDS)
        if not line.startswith("port "):
            self.stop()
            raise LocalStackError(f"moto did not start (exit {child.poll()}): {line.strip()!r}")
        self.port = int(line.split()[1])
        return f"http://{self.host}:{self.port}"

    def stop(self) -> None:
        child, self._child = self._child, None
        if child is None:
            return
        if child.stdin is not None:
            child.stdin.close()  # EOF: the child stops its server and exits
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
        if child.stdout is not None:
            child.stdout.close()


def _read_line(stream: IO[str], seconds: float) -> str:
    """The child's first line, or "" when it does not come within ``seconds``."""
    box: list[str] = []
    reader = threading.Thread(target=lambda: box.append(stream.readline()), daemon=True)
    reader.start()
    reader.join(seconds)
    return box[0] if box else ""


def _housekeeping(stop: threading.Event, freeze: bool) -> None:
    """Every few seconds: forget moto's instance tracking, collect, freeze what survived.

    moto records every model object it ever made (``instances_tracked``, for its web dashboard,
    which nothing here uses): every item, message and every deep copy of a table a
    ``TransactWriteItems`` makes (about 200 KB each at a few hundred items), so a long run grew
    by gigabytes. ``reset_model_data`` drops only those lists; the data stays in the backends.
    """
    from moto.core.model_instances import reset_model_data

    while not stop.wait(FREEZE_EVERY_SECONDS):
        reset_model_data()
        if freeze:
            gc.collect()  # walks only what is not frozen yet: the last few seconds' objects
            gc.freeze()


# DynamoDB operations that only read moto's table: they may run together.
_READS = frozenset(
    {"GetItem", "BatchGetItem", "Query", "Scan", "TransactGetItems", "DescribeTable",
     "DescribeTimeToLive", "ListTables"}
)  # fmt: skip


class _ReadWriteLock:
    """Many readers or one writer; a waiting writer holds back new readers (no starvation)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writing = False
        self._writers_waiting = 0

    @contextlib.contextmanager
    def reading(self) -> Iterator[None]:
        with self._cond:
            self._cond.wait_for(lambda: not self._writing and not self._writers_waiting)
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                self._cond.notify_all()

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        with self._cond:
            self._writers_waiting += 1
            self._cond.wait_for(lambda: not self._writing and not self._readers)
            self._writers_waiting -= 1
            self._writing = True
        try:
            yield
        finally:
            with self._cond:
                self._writing = False
                self._cond.notify_all()


def _one_dynamodb_request_at_a_time(app: Any) -> Any:
    """moto's DynamoDB is not thread-safe: ``TransactWriteItems`` deep-copies the table, and a
    query walks it, while other request threads write to it ("dictionary changed size during
    iteration", a 500 that botocore retries, slowing every caller under load). A DynamoDB write
    runs alone; reads run together (a long query does not hold up a lookup). Everything else,
    SQS long polls above all, stays concurrent."""
    lock = _ReadWriteLock()

    def serve(environ: dict[str, Any], start_response: Any) -> Any:
        target = str(environ.get("HTTP_X_AMZ_TARGET", ""))
        if not target.startswith("DynamoDB_"):
            return app(environ, start_response)
        guard = lock.reading() if target.partition(".")[2] in _READS else lock.writing()
        with guard:
            return list(app(environ, start_response))  # the whole body, inside the lock

    return serve


def _transactions_back_up_only_their_items() -> None:
    """Make moto's ``TransactWriteItems`` back up the items it touches, not the whole table.

    moto 5 deep-copies every table a transaction names, once per item of the transaction, so it
    can put the copy back if a condition fails. The account call slots (shared/call_slots.py) run
    a three-item transaction per call; with a few thousand call records in the table each one cost
    tens of milliseconds of a lock every DynamoDB write waits on, and call setup on the local
    stack crawled as a bench or a long ``agera dev`` session went on. Here the transaction runs
    with the table copy turned into the table itself, and a failed one puts back just its own
    items (deep copies taken before it ran). Safe because a DynamoDB write runs alone in this
    process (``_one_dynamodb_request_at_a_time``).
    """
    import copy

    from moto.dynamodb import models
    from moto.dynamodb.models.table import Table

    original = models.DynamoDBBackend.transact_write_items

    class _TablesNotCopied:
        @staticmethod
        def deepcopy(value: Any, memo: dict[int, Any] | None = None) -> Any:
            return value if isinstance(value, Table) else copy.deepcopy(value, memo)

    def backup(backend: Any, entry: dict[str, Any]) -> tuple[Any, Any, Any, Any] | None:
        op_type, op = next(iter(entry.items()), (None, None))
        if not isinstance(op, dict) or op.get("TableName") not in backend.tables:
            return None
        table = backend.tables[op["TableName"]]
        try:
            keys = op.get("Key")
            if op_type == "Put":
                item = op["Item"]
                keys = {table.hash_key_attr: item[table.hash_key_attr]}
                if table.range_key_attr is not None:
                    keys[table.range_key_attr] = item[table.range_key_attr]
            hash_key, range_key = backend.get_keys_value(table, keys)
            current = table.get_item(hash_key, range_key)
        except Exception:  # a malformed item: moto's own code refuses it, with its own error
            return None
        return table, hash_key, range_key, copy.deepcopy(current)

    def restore(table: Any, hash_key: Any, range_key: Any, item: Any) -> None:
        if table.range_key_attr is None:
            holder, key = table.items, hash_key
        else:
            holder, key = table.items[hash_key], range_key
        if item is None:
            holder.pop(key, None)
        else:
            holder[key] = item

    def transact_write_items(self: Any, transact_items: list[dict[str, Any]]) -> None:
        saved = [b for entry in transact_items[:100] if (b := backup(self, entry)) is not None]
        models.copy = _TablesNotCopied  # type: ignore[assignment]
        try:
            return original(self, transact_items)
        except BaseException:
            for table, hash_key, range_key, item in reversed(saved):
                restore(table, hash_key, range_key, item)
            raise
        finally:
            models.copy = copy  # type: ignore[assignment]

    models.DynamoDBBackend.transact_write_items = transact_write_items  # type: ignore[method-assign]


def main(argv: list[str]) -> int:
    stock = "--stock-transactions" in argv
    argv = [a for a in argv if a != "--stock-transactions"]
    host, port = [*argv, "127.0.0.1", "0"][:2]
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # per-request access log: ~4x slower
    server = ThreadedMotoServer(ip_address=host, port=int(port), verbose=False)
    server.start()
    wsgi = server._server  # the one handle on moto's WSGI server
    assert wsgi is not None
    wsgi.app = _one_dynamodb_request_at_a_time(wsgi.app)
    if not stock:
        _transactions_back_up_only_their_items()
    _, bound = server.get_host_and_port()
    gc.collect()
    gc.freeze()  # moto's own modules and models: never worth walking again
    stop = threading.Event()
    threading.Thread(target=_housekeeping, args=(stop, True), daemon=True).start()
    print(f"port {bound}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        sys.stdin.read()  # until the parent closes it or dies
    stop.set()
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
