"""Each API module's operations as data, so OpenAPI is generated from the models the code uses.

A resource module exports ``OPERATIONS``: one `Operation` per method and path, naming the pydantic
models it reads and writes. The OpenAPI document is built from these tuples and the models'
JSON schemas, never written by hand, so it cannot drift from what the handlers validate.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel


@dataclass(frozen=True, slots=True)
class Operation:
    """One method on one path. ``request``/``response`` are body models (None: no body)."""

    method: str
    path: str  # Starlette style: /api/calls/{call_uuid}
    summary: str
    tag: str
    status: int = 200
    request: type[BaseModel] | None = None
    response: type[BaseModel] | None = None
    query: type[BaseModel] | None = None  # query-string parameters as a model's fields
    auth: bool = True
    admin_only: bool = False
    idempotent_header: bool = False  # accepts Idempotency-Key
