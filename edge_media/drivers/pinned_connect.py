"""Opening a bot's TCP connection at an address the SSRF check passed (DNS rebinding closed).

Why: checking a ``socket_url`` and then giving its host name to ``create_connection`` resolves
the name twice, and a rebinding name can answer a public address to the check and ``127.0.0.1``
(or the metadata service) to the connect. Here the host is resolved once (`AddressPolicy`, the
node's resolver: ``DriverContext.resolve``), every address is checked against the SSRF rule
(``AGERA_SSRF_ALLOW_LIST``), and TCP goes to one of those addresses, tried in the resolver's order.

TLS and Host stay the name's: ``server_hostname`` is the URL's host, so SNI and certificate
verification are against the name, as with an unpinned connect; websockets' ``ClientProtocol``
writes the upgrade's ``Host`` header from the URL, not from the socket's address.

Without a policy (the native drivers: their socket URLs come from ElevenLabs' or Vapi's API at the
operator's configured origin, not from a customer) the connect is asyncio's own.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable

from edge_media.drivers.base import BotUnavailable, ConnectStep
from shared.ssrf import AddressPolicy, HostUnresolvable, UnsafeUrlError

__all__ = ["open_connection"]


async def _checked(policy: AddressPolicy, host: str, field: str, shown: str) -> list[str]:
    """One resolution of ``host``, every address checked; `BotUnavailable` when refused."""
    try:
        if policy.needs_dns(host):  # getaddrinfo blocks: off the loop
            return await asyncio.to_thread(policy.addresses, host, field)
        return policy.addresses(host, field)
    except HostUnresolvable:
        raise BotUnavailable(
            f"cannot connect to bot at {shown}: host does not resolve", step=ConnectStep.DNS
        ) from None
    except UnsafeUrlError as error:
        raise BotUnavailable(str(error), step=ConnectStep.TARGET) from None


async def open_connection(
    loop: asyncio.AbstractEventLoop,
    factory: Callable[[], asyncio.Protocol],
    host: str,
    port: int,
    *,
    tls: ssl.SSLContext | None,
    policy: AddressPolicy | None,
    shown: str,
    field: str = "socket_url",
) -> None:
    """Connect ``factory``'s protocol to ``host``:``port`` (TLS over it when ``tls``).

    With a ``policy``, only to an address it checked; a refused host is `BotUnavailable`
    (step ``target``, the message naming ``field`` as the API's 422 does). OS errors (refused,
    unreachable, TLS) propagate for the caller to name.
    """
    server_hostname = host if tls is not None else None
    if policy is None:
        await loop.create_connection(factory, host, port, ssl=tls, server_hostname=server_hostname)
        return
    failure: OSError | None = None
    for address in await _checked(policy, host, field, shown):
        try:
            await loop.create_connection(
                factory, address, port, ssl=tls, server_hostname=server_hostname
            )
            return
        except ssl.SSLError:
            raise  # the peer answered: another address of the name is no better
        except OSError as error:  # refused, unreachable: the next checked address
            failure = error
    assert failure is not None  # a resolution always has at least one address
    raise failure
