"""One route per path: every method of the path is served and listed in a 405's Allow."""

from __future__ import annotations

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse

from functions.api.routing import route


async def read(request: Request) -> PlainTextResponse:
    return PlainTextResponse("read")


async def change(request: Request) -> PlainTextResponse:
    return PlainTextResponse("changed")


@pytest.mark.anyio
async def test_dispatch_by_method_and_allow_header() -> None:
    app = Starlette(routes=[route("/thing", {"GET": read, "PATCH": change})])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        assert (await client.get("/thing")).text == "read"
        assert (await client.patch("/thing")).text == "changed"
        assert (await client.head("/thing")).status_code == 200
        refused = await client.delete("/thing")
    assert refused.status_code == 405
    assert set(refused.headers["allow"].split(", ")) == {"GET", "HEAD", "PATCH"}
