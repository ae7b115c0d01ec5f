"""EC2 instance metadata through IMDSv2: a session token first, then each read with it.

Why hand-written on http.client (two requests, a few lines) rather than botocore's fetcher:
botocore's is private API, and urllib honours ``http_proxy``, while a request for instance
metadata must never go to a proxy. Every call has a short timeout and raises `ImdsError` on
anything but 200: off EC2 nothing answers at all, and callers decide what that means (the node
id falls back to a setting, a missing public address stops the start).

The node asks for three things (docs/deploy-edge.md): ``instance-id`` (its id), ``public-ipv4``
(what to put in SIP and SDP, read after the boot script claimed an Elastic IP) and
``autoscaling/target-lifecycle-state`` (``Terminated`` when the Auto Scaling group scales it in).
"""

from __future__ import annotations

import http.client
from urllib.parse import urlsplit

__all__ = ["IMDS_TIMEOUT_SECONDS", "ImdsError", "imds_get"]

IMDS_TIMEOUT_SECONDS = 1.0  # IMDS answers in milliseconds on EC2; off EC2 nothing answers at all
IMDS_TOKEN_TTL_SECONDS = 60  # each token is used once, right away
MAX_BODY_BYTES = 1024


class ImdsError(Exception):
    """Instance metadata did not answer, or answered with an error."""


def imds_get(base_url: str, path: str, *, timeout: float = IMDS_TIMEOUT_SECONDS) -> str:
    """``GET /latest/meta-data/<path>`` with a fresh IMDSv2 token; the body, stripped."""
    parts = urlsplit(base_url)
    host, port = parts.hostname or "169.254.169.254", parts.port or 80
    try:
        token = _request(
            host,
            port,
            "PUT",
            "/latest/api/token",
            {"X-aws-ec2-metadata-token-ttl-seconds": str(IMDS_TOKEN_TTL_SECONDS)},
            timeout,
        )
        return _request(
            host,
            port,
            "GET",
            f"/latest/meta-data/{path}",
            {"X-aws-ec2-metadata-token": token},
            timeout,
        )
    except (OSError, http.client.HTTPException) as exc:
        raise ImdsError(f"instance metadata at {base_url} did not answer ({exc})") from None


def _request(
    host: str, port: int, method: str, path: str, headers: dict[str, str], timeout: float
) -> str:
    connection = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        connection.request(method, path, headers=headers)
        response = connection.getresponse()
        body = response.read(MAX_BODY_BYTES).decode("ascii", "replace").strip()
    finally:
        connection.close()
    if response.status != 200:
        raise ImdsError(f"{method} {path}: HTTP {response.status}")
    return body
