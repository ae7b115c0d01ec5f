"""The resource pages: trunks (``pages_trunks``), agents and telephony configurations
(``pages_agents``), registered together by ``functions.dashboard.app``."""

from __future__ import annotations

from collections.abc import Callable

from starlette.routing import Route

from functions.context import Context
from functions.dashboard.pages_agents import agent_routes
from functions.dashboard.pages_trunks import trunk_routes


def resource_routes(ctx_provider: Callable[[], Context]) -> list[Route]:
    return [*trunk_routes(ctx_provider), *agent_routes(ctx_provider)]
