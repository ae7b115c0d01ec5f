"""What the node reads from the table besides calls: extensions by SIP username, and trunks.

Why a trunk book held in memory: every INVITE's source is checked against the trunks' inbound
CIDRs before any other work (a carrier flood must cost a set lookup, not a table read), and
outbound calls need the account's trunk at once. Each source stays paired with its trunk's
account (`inbound_sources`): a trunk's carrier may only call that account's numbers. The book is reloaded every
``REFRESH_SECONDS``; a trunk added through the API takes effect within that time, which the API
docs say. Extensions are looked up per REGISTER/INVITE (the registrar caches nothing secret).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from edge_media.sip.registrar import ExtensionAuth
from shared.dynamo import mapping
from shared.dynamo.repository import AsyncRepository
from shared.models import Account, Extension, Trunk

__all__ = ["DynamoDirectory", "TrunkBook"]

logger = logging.getLogger("agera.edge.stores")

REFRESH_SECONDS = 30.0
PAGE = 100


class DynamoDirectory:
    """`ExtensionDirectory` over the table: SIP username index item → Extension → credentials."""

    def __init__(self, repo: AsyncRepository) -> None:
        self.repo = repo

    async def lookup(self, username: str) -> ExtensionAuth | None:
        request = mapping.get_request(self.repo.table, mapping.sip_user_key(username))
        item = (await self.repo.client.get_item(**request)).get("Item")
        if not item:
            return None
        account_id = item["account_id"]["S"]
        extension = await self.repo.get(Extension, account_id, item["extension"]["S"])
        if extension is None:
            return None
        return ExtensionAuth.from_extension(extension)


class TrunkBook:
    """Every account's trunks, reloaded periodically; ``on_change`` sees each new set."""

    def __init__(
        self, repo: AsyncRepository, *, on_change: Callable[[list[Trunk]], None] | None = None
    ) -> None:
        self.repo = repo
        self.trunks: list[Trunk] = []
        self.on_change = on_change
        self._task: asyncio.Task[None] | None = None

    async def load(self) -> list[Trunk]:
        trunks: list[Trunk] = []
        cursor: str | None = None
        while True:
            page = await self.repo.list(
                "TRUNKS", Trunk, limit=PAGE, cursor=cursor, newest_first=False
            )
            trunks.extend(page.items)
            cursor = page.next_cursor
            if not cursor:
                break
        changed = [t.model_dump() for t in trunks] != [t.model_dump() for t in self.trunks]
        self.trunks = trunks
        if changed and self.on_change is not None:
            self.on_change(trunks)
        return trunks

    def inbound_cidrs(self) -> list[str]:
        return [cidr for trunk in self.trunks for cidr in trunk.inbound_sources]

    def inbound_sources(self) -> list[tuple[str, str]]:
        """Every trunk's inbound sources as ``(cidr, account_id)``: whose numbers they reach."""
        return [(cidr, trunk.account_id) for trunk in self.trunks for cidr in trunk.inbound_sources]

    async def trunk_for(self, account: Account, trunk_id: str | None) -> Trunk | None:
        """The trunk an account's outbound call uses: the one named, else its first."""
        if trunk_id is not None:
            return await self.repo.get(Trunk, account.account_id, trunk_id)
        mine = [t for t in self.trunks if t.account_id == account.account_id]
        if not mine:  # maybe added since the last reload
            page = await self.repo.list(
                "TRUNKS",
                Trunk,
                limit=PAGE,
                newest_first=False,
                sort_prefix=f"{account.account_id}#",
            )
            mine = list(page.items)
        return mine[0] if mine else None

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._refresh())

    async def _refresh(self) -> None:
        while True:
            await asyncio.sleep(REFRESH_SECONDS)
            try:
                await self.load()
            except Exception as error:
                logger.warning("trunk reload failed (keeping the last set): %s", error)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
