"""One Starlette ``Route`` per path, dispatching on the method.

Starlette answers 405 from the first route whose path matches, with that route's methods in
``Allow``. Separate routes for ``GET /api/numbers/{number}`` and ``PATCH`` of the same path would
make ``DELETE``'s neighbour ``PUT`` answer ``Allow: GET, HEAD`` only; one route per path lists them
all.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

Endpoint = Callable[[Request], Awaitable[Response]]


def route(path: str, endpoints: Mapping[str, Endpoint]) -> Route:
    """A route serving ``endpoints`` (method → endpoint); HEAD follows GET as in Starlette."""
    table = {method.upper(): endpoint for method, endpoint in endpoints.items()}
    if "GET" in table:
        table.setdefault("HEAD", table["GET"])

    async def dispatch(request: Request) -> Response:
        return await table[request.method](request)

    return Route(path, dispatch, methods=list(endpoints))
