"""The drivers' I/O tests run on stock asyncio and on uvloop, the loop the edge node uses
(edge_media/loop.py): transports differ in buffering and in how they report a reset."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture(
    params=[
        pytest.param(("asyncio", {}), id="asyncio"),
        pytest.param(("asyncio", {"use_uvloop": True}), id="uvloop"),
    ]
)
def anyio_backend(request: pytest.FixtureRequest) -> Any:
    return request.param
