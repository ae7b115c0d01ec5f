"""Every log line names its own call or none, also with the workers and the edge in one process
(``agera dev``): a worker's keys never land on a line logged elsewhere."""

from __future__ import annotations

import io
import json
import logging
import threading
import uuid
from typing import Any

from functions.observability import call_log_keys, logger


def json_lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_two_overlapping_calls_each_name_their_own(log_output: io.StringIO) -> None:
    call_a, call_b = str(uuid.uuid4()), str(uuid.uuid4())
    in_a = threading.Event()
    edge_logged = threading.Event()

    def worker() -> None:  # the events worker's poller thread, handling call A
        with call_log_keys(call_a, "acc_a"):
            logger.info("worker: folding an event")
            in_a.set()
            edge_logged.wait(5)
            logger.info("worker: queued the callback")
        logger.info("worker: between records")

    thread = threading.Thread(target=worker)
    thread.start()
    assert in_a.wait(5)
    # the edge node, in the main thread, logs about call B while the worker is inside call A
    logging.getLogger(f"{logger.service}.bridge").warning("[call %s] bot connected", call_b)
    with call_log_keys(call_b, "acc_b"):
        logger.info("edge-side line with its own keys")
    logger.info("after call B")
    edge_logged.set()
    thread.join(5)
    lines = {str(line["message"]): line for line in json_lines(log_output.getvalue())}
    assert lines["worker: folding an event"]["call_uuid"] == call_a
    assert lines["worker: queued the callback"]["call_uuid"] == call_a
    assert "call_uuid" not in lines["worker: between records"]
    assert "call_uuid" not in lines[f"[call {call_b}] bot connected"]
    assert lines["edge-side line with its own keys"]["call_uuid"] == call_b
    assert "call_uuid" not in lines["after call B"]


def test_the_callbacks_worker_keys_stay_in_its_thread(aws: Any, log_output: io.StringIO) -> None:
    from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

    from functions.context import default_context
    from functions.workers import callbacks
    from shared.events import CallbackMessage

    call_a = uuid.uuid4()
    message = CallbackMessage(
        id="cb-1", account_id="acc_gone", call_uuid=call_a, payload={"event": "call.completed"}
    )
    record = SQSRecord(
        {"body": message.model_dump_json(), "attributes": {"ApproximateReceiveCount": "1"}}
    )
    worker = threading.Thread(target=callbacks.deliver, args=(default_context(), record))
    worker.start()
    worker.join(10)
    logging.getLogger(f"{logger.service}.bridge").warning("edge line after the worker")
    lines = {str(line["message"]): line for line in json_lines(log_output.getvalue())}
    assert lines["callback dropped: account no longer exists"]["call_uuid"] == str(call_a)
    assert "call_uuid" not in lines["edge line after the worker"]
