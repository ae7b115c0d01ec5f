"""The SSRF guard (``shared.ssrf``) applied to the URLs of account and routing-resource writes.

Only URLs the gateway itself will call are checked: ``webhook_url`` (routing webhook and status
callbacks) and ``socket_url`` when it is a WebSocket URL. The native drivers (``elevenlabs``,
``vapi``) name services the gateway reaches at fixed public hosts, so there is nothing to check.
A transfer's ``sip:`` URI is checked too (`check_transfer_destination`): the node may dial it.
Checking may resolve a host name, so it runs in the request's worker thread, not on the loop.

The resolver is ``Context.resolve_host`` when the context has one (tests inject a fake resolver
there; the real DNS is never used in tests), else the system resolver.
"""

from __future__ import annotations

from collections.abc import Mapping

from functions.api.errors import ApiError
from functions.context import Context
from shared.models import Route
from shared.ssrf import Resolver, UnsafeUrlError, check_public_url, check_sip_uri, resolve_host
from shared.validation import MediaKind, parse_media_target, parse_transfer_destination


def resolver_of(ctx: Context) -> Resolver:
    resolver: Resolver = ctx.resolve_host or resolve_host
    return resolver


def check_urls(ctx: Context, urls: Mapping[str, str | None]) -> None:
    """Refuse with a 422 naming the field the first URL the gateway must not call.

    ``urls`` maps a request field (dotted for nested ones) to a webhook URL or a media target.
    """
    resolve = resolver_of(ctx)
    for field, url in urls.items():
        if not url:
            continue
        if "://" not in url and parse_media_target(url).kind is not MediaKind.WEBSOCKET:
            continue  # elevenlabs / vapi: no URL of the customer's
        try:
            check_public_url(url, field, ctx.settings, resolve)
        except UnsafeUrlError as exc:
            raise ApiError(422, "unsafe_url", str(exc), exc.field) from None


def route_urls(route: Route | None, prefix: str = "route") -> dict[str, str | None]:
    """The URLs of a route keyed by their dotted request field."""
    if route is None:
        return {}
    return {f"{prefix}.socket_url": route.socket_url, f"{prefix}.webhook_url": route.webhook_url}


def check_transfer_destination(ctx: Context, destination: str, field: str) -> None:
    """Refuse with a 422 naming ``field`` a SIP URI whose host is not public (or allowed).

    Numbers and extensions go through the account's trunk or the node's own registrar, which
    the customer does not choose, so only ``sip:``/``sips:`` destinations are checked.
    """
    try:
        kind, value = parse_transfer_destination(destination)
    except ValueError:
        return  # the body's validation already refused it
    if kind != "sip":
        return
    try:
        check_sip_uri(value, field, ctx.settings, resolver_of(ctx))
    except UnsafeUrlError as exc:
        raise ApiError(422, "unsafe_url", str(exc), exc.field) from None
