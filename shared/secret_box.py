"""Stored secrets sealed field by field: AES-256-GCM under data keys that a KMS key wraps.

Why field-level and not only the table's own encryption at rest: DynamoDB's SSE protects the disks,
but anyone who may read items (a support engineer's console, a backup restored elsewhere, a role
with ``dynamodb:GetItem`` only) reads every trunk password and provider token. Sealed values need
``kms:Decrypt`` too, which is granted separately and logged by CloudTrail per call.

Why envelope encryption with cached data keys: one KMS request per value would put KMS latency and
its request quota on every account read. A process asks KMS for a data key (``GenerateDataKey``)
and seals with it for at most ``max_age`` seconds or ``max_uses`` values; a value carries its data
key wrapped, and an unwrapped one is kept (LRU, same age limit) so reading a thousand items sealed
by one writer costs one ``Decrypt``. The age limit bounds how long a warm process keeps working
after the key is disabled or a role loses its grant.

Stored form, one self-describing string (so a value is a string in its model, and a reader can
tell sealed from not without a schema)::

    agera:enc:v1:<wrapped data key>:<nonce>:<ciphertext and tag>      (base64url, no padding)

The associated data binds a value to its item and field (`SecretRef`: pk, sk and field path): a
sealed value copied to another item, or to another field of the same item, does not open. The KMS
encryption context names the purpose and the table, so a wrapped key unwraps only for this table
(and the IAM grants in ``template.yaml`` are conditioned on it).

A value without the prefix is plaintext from before sealing: it is read as it is, and sealed the
next time it is written (docs/secrets.md). With no key configured a box refuses to store a secret
(`SecretsNotConfigured`) unless plaintext was asked for explicitly, for a local stack.

The two boxes differ only in how they reach KMS (boto3 in Lambda, aioboto3 on the edge node); the
cache (`DataKeys`) and the sealing itself are shared and do no I/O. ``cryptography`` is imported on
first use: a function that never meets a secret does not pay for it at cold start.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    from shared.settings import Settings

__all__ = [
    "PREFIX",
    "AsyncSecretBox",
    "DataKeys",
    "SecretBox",
    "SecretError",
    "SecretOpenFailed",
    "SecretRef",
    "SecretsNotConfigured",
    "is_sealed",
]

PREFIX = "agera:enc:v1:"
PURPOSE = "agera-secret"
NONCE_BYTES = 12
TAG_BYTES = 16
DEFAULT_MAX_AGE_SECONDS = 300.0
# Random 96-bit nonces stay safe for 2**32 messages per key (NIST SP 800-38D §8.3); the limit here
# is far below that and mostly bounds how long one data key is in use.
DEFAULT_MAX_USES = 10_000
DEFAULT_CACHE_SIZE = 1024


class SecretError(Exception):
    """Base of the errors of sealing and opening; messages name the field, never its value."""


class SecretsNotConfigured(SecretError):
    """A secret must be sealed or opened and there is no key (or no box) to do it with."""


class SecretOpenFailed(SecretError):
    """A sealed value did not open: moved to another item or field, altered, or foreign."""


@dataclass(frozen=True, slots=True)
class SecretRef:
    """Where a secret is stored: the item's keys and the field's dotted path (``vapi.api_key``)."""

    pk: str
    sk: str
    path: str

    @property
    def aad(self) -> bytes:
        # JSON keeps the parts apart whatever characters the keys hold.
        return json.dumps([PREFIX, self.pk, self.sk, self.path], separators=(",", ":")).encode()

    def __str__(self) -> str:
        return f"{self.path} of {self.pk} / {self.sk}"


def is_sealed(value: object) -> bool:
    return isinstance(value, str) and value.startswith(PREFIX)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True, slots=True)
class Sealed:
    """A parsed stored value."""

    wrapped_key: bytes
    nonce: bytes
    ciphertext: bytes

    def __str__(self) -> str:
        parts = (self.wrapped_key, self.nonce, self.ciphertext)
        return PREFIX + ":".join(_b64(part) for part in parts)

    @classmethod
    def parse(cls, stored: str, ref: SecretRef) -> Sealed:
        try:
            wrapped, nonce, ciphertext = (_unb64(p) for p in stored[len(PREFIX) :].split(":"))
        except (ValueError, binascii.Error):
            raise SecretOpenFailed(f"{ref} looks sealed but is malformed") from None
        if not wrapped or len(nonce) != NONCE_BYTES or len(ciphertext) < TAG_BYTES:
            raise SecretOpenFailed(f"{ref} looks sealed but is malformed")
        return cls(wrapped, nonce, ciphertext)


def _cipher(key: bytes) -> AESGCM:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    return AESGCM(key)


def seal_with(cipher: AESGCM, wrapped_key: bytes, plaintext: str, ref: SecretRef) -> str:
    nonce = os.urandom(NONCE_BYTES)
    return str(Sealed(wrapped_key, nonce, cipher.encrypt(nonce, plaintext.encode(), ref.aad)))


def open_with(cipher: AESGCM, sealed: Sealed, ref: SecretRef) -> str:
    from cryptography.exceptions import InvalidTag

    try:
        plaintext = cipher.decrypt(sealed.nonce, sealed.ciphertext, ref.aad)
    except InvalidTag:
        raise SecretOpenFailed(
            f"{ref} does not open: it was sealed for another item or field, or altered"
        ) from None
    return plaintext.decode()


@dataclass(slots=True)
class _Current:
    cipher: AESGCM
    wrapped: bytes
    born: float
    uses: int = 0


class DataKeys:
    """The data-key cache, without I/O: time is passed in, KMS answers are handed in.

    ``current`` is the key new values are sealed with until it is ``max_age`` seconds old or has
    sealed ``max_uses`` values. ``unwrapped`` keeps keys KMS unwrapped, by wrapped form, least
    recently used first out, each for ``max_age`` seconds.
    """

    def __init__(
        self,
        *,
        max_age: float = DEFAULT_MAX_AGE_SECONDS,
        max_uses: int = DEFAULT_MAX_USES,
        size: int = DEFAULT_CACHE_SIZE,
    ) -> None:
        self.max_age = max_age
        self.max_uses = max_uses
        self.size = size
        self._current: _Current | None = None
        self._unwrapped: OrderedDict[bytes, tuple[AESGCM, float]] = OrderedDict()

    def take_current(self, now: float) -> tuple[AESGCM, bytes] | None:
        """The sealing key for one more value, or None when a new one is due."""
        current = self._current
        if current is None or now - current.born >= self.max_age or current.uses >= self.max_uses:
            self._current = None
            return None
        current.uses += 1
        return current.cipher, current.wrapped

    def set_current(self, plaintext: bytes, wrapped: bytes, now: float) -> AESGCM:
        cipher = _cipher(plaintext)
        self._current = _Current(cipher, wrapped, now, uses=1)
        self.remember(wrapped, cipher, now)  # this process reads back what it wrote
        return cipher

    def unwrapped(self, wrapped: bytes, now: float) -> AESGCM | None:
        entry = self._unwrapped.get(wrapped)
        if entry is None:
            return None
        cipher, born = entry
        if now - born >= self.max_age:
            del self._unwrapped[wrapped]
            return None
        self._unwrapped.move_to_end(wrapped)
        return cipher

    def remember(self, wrapped: bytes, cipher_or_key: AESGCM | bytes, now: float) -> AESGCM:
        cipher = _cipher(cipher_or_key) if isinstance(cipher_or_key, bytes) else cipher_or_key
        self._unwrapped[wrapped] = (cipher, now)
        self._unwrapped.move_to_end(wrapped)
        while len(self._unwrapped) > self.size:
            self._unwrapped.popitem(last=False)
        return cipher


def _context(table: str) -> dict[str, str]:
    return {"purpose": PURPOSE, "table": table}


def _refused(error: ClientError, ref: SecretRef) -> SecretError | ClientError:
    """KMS's refusal of a wrapped key as our error; other failures (throttling, access) as they are."""
    code = str(error.response.get("Error", {}).get("Code", ""))
    if code == "InvalidCiphertextException":
        return SecretOpenFailed(f"{ref} does not open: KMS refused its data key ({code})")
    return error


class _BoxBase:
    def __init__(
        self,
        *,
        key_id: str | None,
        table: str,
        allow_plaintext: bool = False,
        max_age: float = DEFAULT_MAX_AGE_SECONDS,
        max_uses: int = DEFAULT_MAX_USES,
        cache_size: int = DEFAULT_CACHE_SIZE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.key_id = key_id or None
        self.table = table
        self.allow_plaintext = allow_plaintext
        self.context: Mapping[str, str] = _context(table)
        self.keys = DataKeys(max_age=max_age, max_uses=max_uses, size=cache_size)
        self.clock = clock

    @property
    def seals(self) -> bool:
        """Whether written secrets are sealed (a key is set), rather than stored as given."""
        return self.key_id is not None

    def _plaintext(self, plaintext: str, ref: SecretRef) -> str:
        if not self.allow_plaintext:
            raise SecretsNotConfigured(
                f"{ref}: no KMS key is configured (AGERA_KMS_KEY_ID), so the secret is not "
                "stored; set the key, or AGERA_SECRETS_PLAINTEXT=1 on a local stack "
                "(docs/secrets.md)"
            )
        if is_sealed(plaintext):  # would be read back as a sealed value
            raise SecretOpenFailed(f"{ref}: a plaintext secret may not start with {PREFIX!r}")
        return plaintext

    def _generate_request(self) -> dict[str, Any]:
        return {"KeyId": self.key_id, "KeySpec": "AES_256", "EncryptionContext": dict(self.context)}

    def _decrypt_request(self, wrapped: bytes) -> dict[str, Any]:
        # No KeyId: the wrapped key names its KMS key, so values sealed before the key was
        # replaced still open; IAM limits which keys this role may use at all.
        return {"CiphertextBlob": wrapped, "EncryptionContext": dict(self.context)}


class SecretBox(_BoxBase):
    """Sync box (boto3) for the Lambda functions; safe to share between request threads.

    ``kms`` returns the KMS client and is called on first need, so a function that never meets a
    secret never builds one.
    """

    def __init__(self, kms: Callable[[], Any], **options: Any) -> None:
        super().__init__(**options)
        self._kms_factory = kms
        self._kms: Any = None
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings, kms: Callable[[], Any]) -> SecretBox:
        return cls(kms, **_options(settings))

    def _client(self) -> Any:
        with self._lock:
            if self._kms is None:
                self._kms = self._kms_factory()
            return self._kms

    def seal(self, plaintext: str, ref: SecretRef) -> str:
        if not self.seals:
            return self._plaintext(plaintext, ref)
        with self._lock:
            taken = self.keys.take_current(self.clock())
        if taken is None:
            answer = self._client().generate_data_key(**self._generate_request())
            with self._lock:
                cipher = self.keys.set_current(
                    answer["Plaintext"], answer["CiphertextBlob"], self.clock()
                )
            taken = cipher, answer["CiphertextBlob"]
        return seal_with(*taken, plaintext, ref)

    def open(self, stored: str, ref: SecretRef) -> str:
        if not is_sealed(stored):
            return stored
        sealed = Sealed.parse(stored, ref)
        with self._lock:
            cipher = self.keys.unwrapped(sealed.wrapped_key, self.clock())
        if cipher is None:
            try:
                answer = self._client().decrypt(**self._decrypt_request(sealed.wrapped_key))
            except ClientError as error:
                raise _refused(error, ref) from None
            with self._lock:
                cipher = self.keys.remember(sealed.wrapped_key, answer["Plaintext"], self.clock())
        return open_with(cipher, sealed, ref)


class AsyncSecretBox(_BoxBase):
    """Async box (an aioboto3/aiobotocore KMS client) for the edge node.

    Why aioboto3 rather than a thread: the node already holds aioboto3 clients for DynamoDB and
    SQS in its exit stack, and a KMS call on a cold cache must not block the media loop. Reads that
    miss on the same wrapped key at once (a trunk reload meeting a cold cache) share one Decrypt.
    """

    def __init__(self, kms: Any, **options: Any) -> None:
        super().__init__(**options)
        self.kms = kms
        self._pending: dict[bytes, asyncio.Future[bytes]] = {}
        self._generating: asyncio.Lock | None = None

    @classmethod
    def from_settings(cls, settings: Settings, kms: Any) -> AsyncSecretBox:
        return cls(kms, **_options(settings))

    async def seal(self, plaintext: str, ref: SecretRef) -> str:
        if not self.seals:
            return self._plaintext(plaintext, ref)
        if self._generating is None:
            self._generating = asyncio.Lock()
        async with self._generating:  # one GenerateDataKey when many seal at once
            taken = self.keys.take_current(self.clock())
            if taken is None:
                answer = await self.kms.generate_data_key(**self._generate_request())
                wrapped = answer["CiphertextBlob"]
                taken = self.keys.set_current(answer["Plaintext"], wrapped, self.clock()), wrapped
        return seal_with(*taken, plaintext, ref)

    async def open(self, stored: str, ref: SecretRef) -> str:
        if not is_sealed(stored):
            return stored
        sealed = Sealed.parse(stored, ref)
        cipher = self.keys.unwrapped(sealed.wrapped_key, self.clock())
        if cipher is None:
            try:
                key = await asyncio.shield(self._decrypt(sealed.wrapped_key))
            except ClientError as error:
                raise _refused(error, ref) from None
            cipher = self.keys.remember(sealed.wrapped_key, key, self.clock())
        return open_with(cipher, sealed, ref)

    def _decrypt(self, wrapped: bytes) -> asyncio.Future[bytes]:
        pending = self._pending.get(wrapped)
        if pending is None:
            pending = asyncio.ensure_future(self._ask_kms(wrapped))
            self._pending[wrapped] = pending

            def settled(done: asyncio.Future[bytes]) -> None:
                self._pending.pop(wrapped, None)
                if not done.cancelled():
                    done.exception()  # retrieved: every waiter may have been cancelled

            pending.add_done_callback(settled)
        return pending

    async def _ask_kms(self, wrapped: bytes) -> bytes:
        answer = await self.kms.decrypt(**self._decrypt_request(wrapped))
        plaintext: bytes = answer["Plaintext"]
        return plaintext


def _options(settings: Settings) -> dict[str, Any]:
    return {
        "key_id": settings.kms_key_id or None,
        "table": settings.table_name,
        "allow_plaintext": settings.secrets_plaintext,
        "max_age": settings.secret_key_cache_seconds,
    }
