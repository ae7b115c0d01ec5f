"""What a control-plane function needs at run time: settings and AWS clients, built once.

Clients are created lazily on first use, not at import: Lambda's import time is cold-start time
(docs/performance.md budget: 300 ms), and tests must be able to point ``AWS_ENDPOINT_URL`` at
moto before any client exists. One ``Context`` is shared by a warm function's invocations.

The repository seals and opens stored secrets with a box built from the settings
(``shared/secret_box.py``); its KMS client too is built only when a secret is first met, so the
events worker and the reaper, which never touch one, never create it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from functions.key_cache import KeyCache
from shared.dynamo.repository import Repository
from shared.secret_box import SecretBox
from shared.settings import Settings


@dataclass
class Context:
    settings: Settings = field(default_factory=Settings.load)
    # How the SSRF guard resolves host names in socket/webhook URLs; tests inject a fake one so
    # no test ever asks DNS. None means the system resolver (shared.ssrf.resolve_host).
    resolve_host: Callable[[str], Sequence[str]] | None = None

    @cached_property
    def _session(self) -> Any:
        import boto3

        return boto3.session.Session()

    @cached_property
    def dynamodb(self) -> Any:
        return self._session.client("dynamodb")

    @cached_property
    def sqs(self) -> Any:
        return self._session.client("sqs")

    @cached_property
    def kms(self) -> Any:
        return self._session.client("kms")

    @cached_property
    def secrets(self) -> SecretBox:
        return SecretBox.from_settings(self.settings, lambda: self.kms)

    @cached_property
    def repo(self) -> Repository:
        return Repository(self.dynamodb, self.settings.table_name, secrets=self.secrets)

    @cached_property
    def key_cache(self) -> KeyCache:
        """API-key resolutions, kept for ``api_key_cache_seconds`` (the revocation delay)."""
        return KeyCache(self.settings.api_key_cache_seconds)


_default: Context | None = None


def default_context() -> Context:
    """The process-wide context (settings read from the environment on first use)."""
    global _default
    if _default is None:
        _default = Context()
    return _default


def reset_default_context() -> None:
    """Forget the process-wide context (tests and the local stack after changing the env)."""
    global _default
    _default = None
