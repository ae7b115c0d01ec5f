"""Base classes of the API's request and response bodies.

``defer_build``: pydantic compiles a model's validator when the class is created, a millisecond or
more per model, and the API has dozens. Import time is Lambda cold-start time (budget 300 ms), and a
warm function serves one or two endpoints, so each model is compiled on its first use instead.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class RequestBody(BaseModel):
    """A request body or query: unknown fields are refused, so a typo is a 422, not a no-op."""

    model_config = ConfigDict(extra="forbid", defer_build=True)


class ResponseBody(BaseModel):
    """A response body, validated only when the API builds it from stored entities."""

    model_config = ConfigDict(defer_build=True)
