"""The API's Starlette app (and so ``/dashboard``) under uvicorn on a free 127.0.0.1 port, in a
daemon thread: a real HTTP server like ``agera dev``'s, for the API tests' uvicorn front and the
browser tests. Also the tenants those tests make: an account with one key."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import uvicorn

from functions.api.app import create_app
from functions.context import Context
from shared.models import Account, ApiKeyRole
from shared.provisioning import create_account_with_key, new_account

HOST = "127.0.0.1"
START_SECONDS = 15.0


class LoopbackApiServer:
    """``create_app(context)`` served until `close`; ``base_url`` is where."""

    def __init__(self, context: Callable[[], Context]) -> None:
        config = uvicorn.Config(
            create_app(context),
            host=HOST,
            port=0,
            lifespan="off",
            log_level="warning",
            access_log=False,
            loop="asyncio",
            http="h11",
            ws="none",
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="uvicorn", daemon=True)
        self.thread.start()
        deadline = time.monotonic() + START_SECONDS
        while not self.server.started and self.thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert self.server.started, "uvicorn did not start"
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.base_url = f"http://{HOST}:{port}"

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(START_SECONDS)


@dataclass
class Tenant:
    account: Account
    key: str
    key_id: str

    @property
    def account_id(self) -> str:
        return self.account.account_id


def make_tenant(
    ctx: Context,
    role: ApiKeyRole = ApiKeyRole.ACCOUNT,
    *,
    name_prefix: str = "Tenant",
    **fields: Any,
) -> Tenant:
    """A fresh account with one key of ``role``."""
    account = new_account(f"{name_prefix} {uuid.uuid4().hex[:8]}", **fields)
    issued = create_account_with_key(ctx.repo, account, "default", role)
    return Tenant(account, issued.key, issued.record.key_id)
