"""Where the UA finds extension credentials: a directory looked up by SIP username.

Why a protocol: in production the credentials live in DynamoDB (the API writes HA1 values),
in tests and small installs in memory. The registrar and the INVITE challenge only need
`lookup`, awaited before the sans-I/O registrar runs, so neither knows where the data is.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from edge_media.sip.digest import compute_ha1
from edge_media.sip.registrar import ExtensionAuth

__all__ = ["ExtensionDirectory", "StaticDirectory", "extension_auth"]


class ExtensionDirectory(Protocol):
    async def lookup(self, username: str) -> ExtensionAuth | None:
        """The extension whose SIP username is ``username``, or None."""


def extension_auth(
    account_id: str, extension: str, username: str, password: str, realm: str
) -> ExtensionAuth:
    """An ExtensionAuth from a clear password (what the API stores is these two HA1 values)."""
    return ExtensionAuth(
        account_id=account_id,
        extension=extension,
        username=username,
        realm=realm,
        ha1_md5=compute_ha1(username, realm, password, "MD5"),
        ha1_sha256=compute_ha1(username, realm, password, "SHA-256"),
    )


class StaticDirectory:
    """A fixed set of extensions, for tests and one-box installs."""

    def __init__(self, extensions: Iterable[ExtensionAuth] = ()) -> None:
        self._by_username = {ext.username: ext for ext in extensions}

    def add(self, extension: ExtensionAuth) -> None:
        self._by_username[extension.username] = extension

    async def lookup(self, username: str) -> ExtensionAuth | None:
        return self._by_username.get(username)
