"""EC2's instance metadata (IMDSv2) and the Auto Scaling lifecycle API, on loopback ports.

Why fakes: neither exists off EC2, and moto has no ``CompleteLifecycleAction``. Both are built
from AWS's published behaviour, as HTTP servers, so the node under test is a real ``agera edge``
process talking through its real clients (http.client for IMDS, boto3 for Auto Scaling, pointed
here with ``AWS_ENDPOINT_URL_AUTO_SCALING``).

- `FakeImds`: ``PUT /latest/api/token`` (with ``X-aws-ec2-metadata-token-ttl-seconds``) issues a
  token; every ``GET /latest/meta-data/<path>`` needs it (``X-aws-ec2-metadata-token``), else 401,
  as IMDS does with ``HttpTokens: required``. Paths are served from ``values`` (a missing one
  is 404, as ``public-ipv4`` is for an instance without a public address); tests change
  ``values`` while the node runs (``autoscaling/target-lifecycle-state`` → ``Terminated``).
- `FakeAutoScaling`: the query protocol (form-encoded ``Action=...``) for
  ``RecordLifecycleActionHeartbeat`` and ``CompleteLifecycleAction``; each call is recorded with
  its parameters and answered with the documented empty result.

Each runs a stdlib ``ThreadingHTTPServer`` on its own thread; use them as context managers.
"""

from __future__ import annotations

import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

__all__ = ["FakeAutoScaling", "FakeImds"]

AUTOSCALING_NS = "http://autoscaling.amazonaws.com/doc/2011-01-01/"


class _Server:
    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.fake = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> Any:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


class FakeImds(_Server):
    def __init__(self, values: dict[str, str] | None = None) -> None:
        super().__init__(_ImdsHandler)
        self.values: dict[str, str] = dict(values or {})
        self.tokens: set[str] = set()
        self.reads: list[tuple[str, bool]] = []  # (path, had a valid token)


class _ImdsHandler(BaseHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass

    def _answer(self, status: int, body: str = "") -> None:
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_PUT(self) -> None:
        fake: FakeImds = self.server.fake  # type: ignore[attr-defined]
        ttl = self.headers.get("X-aws-ec2-metadata-token-ttl-seconds", "")
        if self.path != "/latest/api/token" or not ttl.isdigit() or not 1 <= int(ttl) <= 21600:
            self._answer(400)
            return
        token = secrets.token_urlsafe(24)
        fake.tokens.add(token)
        self._answer(200, token)

    def do_GET(self) -> None:
        fake: FakeImds = self.server.fake  # type: ignore[attr-defined]
        prefix = "/latest/meta-data/"
        valid = self.headers.get("X-aws-ec2-metadata-token", "") in fake.tokens
        path = self.path[len(prefix) :] if self.path.startswith(prefix) else self.path
        fake.reads.append((path, valid))
        if not valid:
            self._answer(401)
            return
        value = fake.values.get(path)
        self._answer(404) if value is None else self._answer(200, value)


class FakeAutoScaling(_Server):
    def __init__(self) -> None:
        super().__init__(_AutoScalingHandler)
        self.calls: list[tuple[float, str, dict[str, str]]] = []  # (monotonic, action, params)
        # Answer this many CompleteLifecycleAction calls as AWS does before the hook holds the
        # instance (the group still deregisters it from the load balancer).
        self.no_action_yet = 0

    def actions(self) -> list[str]:
        return [action for _, action, _ in self.calls]


class _AutoScalingHandler(BaseHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        fake: FakeAutoScaling = self.server.fake  # type: ignore[attr-defined]
        length = int(self.headers.get("Content-Length", "0"))
        form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
        action = form.pop("Action", "")
        form.pop("Version", None)
        fake.calls.append((time.monotonic(), action, form))
        if action == "CompleteLifecycleAction" and fake.no_action_yet > 0:
            fake.no_action_yet -= 1
            status, body = (
                400,
                (
                    "<ErrorResponse><Error><Type>Sender</Type><Code>ValidationError</Code>"
                    "<Message>No active Lifecycle Action found with instance ID "
                    f"{form.get('InstanceId', '')}</Message></Error></ErrorResponse>"
                ),
            )
        elif action not in ("RecordLifecycleActionHeartbeat", "CompleteLifecycleAction"):
            status, body = (
                400,
                "<ErrorResponse><Error><Code>InvalidAction</Code></Error></ErrorResponse>",
            )
        else:
            status = 200
            body = (
                f'<{action}Response xmlns="{AUTOSCALING_NS}"><{action}Result/>'
                f"<ResponseMetadata><RequestId>{secrets.token_hex(8)}</RequestId>"
                f"</ResponseMetadata></{action}Response>"
            )
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/xml")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
