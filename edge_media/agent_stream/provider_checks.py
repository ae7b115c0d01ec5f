"""Is this stream really the provider's, and how do we reach its call: one place per provider.

Why each check: the agent UUID in the URL authorises a stream, but a URL leaks; so the stream
must also prove it comes from the provider whose stored configuration it names.

- Cloudonix: the ``start`` message's session is looked up on Cloudonix's API with the stored
  bearer token; only a live session of that domain passes.
- Twilio: the upgrade request carries ``X-Twilio-Signature``, an HMAC of the URL Twilio
  connected to keyed with the account's auth token (`twilio_signature.py`), and the call it
  names must be in progress on Twilio's API.

The same stored credentials hang the call up and transfer it later (`ProviderControl`). Every
refusal is a `HandshakeError` whose reason names the step, never a credential or an id.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import httpx

from edge_media.agent_stream.provider_api import CloudonixApi, ProviderCheckFailed, TwilioApi
from edge_media.agent_stream.provider_leg import ProviderControl
from edge_media.agent_stream.provider_protocol import HandshakeError, StreamStart
from edge_media.agent_stream.stream_path import SupportedProvider
from edge_media.agent_stream.twilio_signature import stream_url, valid_signature
from shared.models import TelephonyConfig, TelephonyProvider
from shared.telephony import normalise_cloudonix_domain

__all__ = ["ProviderApis", "StreamIdentity", "identify", "matching_config"]

logger = logging.getLogger("agera.agent_stream")


@dataclass(frozen=True, slots=True)
class StreamIdentity:
    """Which provider account a stream names: a Cloudonix domain or a Twilio account SID."""

    provider: SupportedProvider
    provider_id: str
    session: str = ""


def identify(
    provider: SupportedProvider, version: int, domain_param: str, start: StreamStart
) -> StreamIdentity:
    """The provider account from the URL (v1 ``Domain``) or the ``start`` message."""
    if provider is SupportedProvider.CLOUDONIX:
        raw = domain_param if version == 1 else start.account_sid
        domain = normalise_cloudonix_domain(raw or start.account_sid)
        if not domain:
            raise HandshakeError("Missing Cloudonix domain in start message")
        if not start.session:
            raise HandshakeError("Missing Cloudonix session in start message")
        return StreamIdentity(provider, domain, start.session)
    if not start.account_sid:
        raise HandshakeError("Missing Twilio account SID in start message")
    return StreamIdentity(provider, start.account_sid)


def matching_config(
    configs: list[TelephonyConfig], identity: StreamIdentity
) -> TelephonyConfig | None:
    """The agent account's configuration for this provider account, if it has one."""
    for config in configs:
        if config.provider.value != identity.provider.value:
            continue
        if config.provider is TelephonyProvider.CLOUDONIX:
            if normalise_cloudonix_domain(config.domain or "") == identity.provider_id:
                return config
        elif config.account_sid == identity.provider_id:
            return config
    return None


@dataclass(frozen=True)
class _CloudonixCall:
    api: CloudonixApi
    domain: str
    session: str
    token: str = field(repr=False)

    async def hangup(self) -> None:
        await self.api.hangup(self.domain, self.session, self.token)

    async def transfer(self, destination: str) -> None:
        await self.api.transfer(self.domain, self.session, self.token, destination)


@dataclass(frozen=True)
class _TwilioCall:
    api: TwilioApi
    account_sid: str
    call_sid: str
    auth_token: str = field(repr=False)

    async def hangup(self) -> None:
        await self.api.hangup(self.account_sid, self.auth_token, self.call_sid)

    async def transfer(self, destination: str) -> None:
        await self.api.transfer(self.account_sid, self.auth_token, self.call_sid, destination)


@dataclass(frozen=True, slots=True)
class UpgradeFacts:
    """What the upgrade request said that a check needs (Twilio's signature covers the URL)."""

    target: str  # path and query as requested
    host: str | None
    forwarded_proto: str | None
    signature: str | None
    scheme: str = "ws"


class ProviderApis:
    """The providers' REST APIs, shared by every stream of the node."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        cloudonix_base: str,
        twilio_base: str,
        public_url: str | None,
    ) -> None:
        self.cloudonix = CloudonixApi(http, cloudonix_base)
        self.twilio = TwilioApi(http, twilio_base)
        self.public_url = public_url or None

    async def verify(
        self,
        identity: StreamIdentity,
        config: TelephonyConfig,
        start: StreamStart,
        upgrade: UpgradeFacts,
    ) -> ProviderControl:
        """Check the stream with the provider; the call's REST handle when it passes."""
        if identity.provider is SupportedProvider.CLOUDONIX:
            token = config.bearer_token or ""
            if not token:
                raise HandshakeError("Cloudonix configuration missing bearer token")
            try:
                await self.cloudonix.validate_session(identity.provider_id, identity.session, token)
            except ProviderCheckFailed as error:
                logger.info("Cloudonix session check failed: %s", error)
                raise HandshakeError("Cloudonix session validation failed") from None
            return _CloudonixCall(self.cloudonix, identity.provider_id, identity.session, token)
        auth_token = config.auth_token or ""
        if not auth_token:
            raise HandshakeError("Twilio configuration missing auth token")
        if not upgrade.signature:
            raise HandshakeError("Missing X-Twilio-Signature")
        url = stream_url(
            self.public_url, upgrade.host, upgrade.scheme, upgrade.forwarded_proto, upgrade.target
        )
        if not valid_signature(auth_token, url, upgrade.signature):
            raise HandshakeError("Invalid X-Twilio-Signature")
        try:
            await self.twilio.check_in_progress(identity.provider_id, auth_token, start.call_sid)
        except ProviderCheckFailed as error:
            logger.info("Twilio call check failed: %s", error)
            raise HandshakeError("Twilio call validation failed") from None
        return _TwilioCall(self.twilio, identity.provider_id, start.call_sid, auth_token)
