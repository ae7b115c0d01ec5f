"""Lambda entry point of the REST API: the Starlette app wrapped by Mangum.

Built at import so a warm function reuses it; the app does no I/O until a request arrives.
``lifespan="off"``: the app has no startup work, and Mangum would otherwise run lifespan events on
every invocation.
"""

from __future__ import annotations

from mangum import Mangum

from functions.api.app import create_app

app = create_app()
handler = Mangum(app, lifespan="off")
