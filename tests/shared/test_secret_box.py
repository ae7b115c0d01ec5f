"""shared/secret_box.py against moto's KMS: sealing, binding to item and field, the key cache.

KMS calls are counted with botocore's own event hooks on the client (``before-call.kms.*``), so the
counts are what would reach KMS, not what our code says it did.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from typing import Any

import aioboto3
import boto3
import pytest

from shared.secret_box import (
    PREFIX,
    AsyncSecretBox,
    DataKeys,
    SecretBox,
    SecretOpenFailed,
    SecretRef,
    SecretsNotConfigured,
    is_sealed,
)
from shared.settings import Settings

SECRET = "sk-live-trunk-password-7f3a"
REF = SecretRef("ACCOUNT#acc_1", "TRUNK#trk_1", "password")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def counted_kms() -> tuple[Any, Counter[str]]:
    client = boto3.session.Session().client("kms")
    calls: Counter[str] = Counter()

    def count(model: Any, **_: Any) -> None:
        calls[model.name] += 1

    client.meta.events.register("before-call.kms.*", count)
    return client, calls


def make_box(aws: Any, kms: Any, **options: Any) -> SecretBox:
    settings = Settings.load()
    defaults: dict[str, Any] = {"key_id": settings.kms_key_id, "table": aws.table_name}
    return SecretBox(lambda: kms, **{**defaults, **options})


@pytest.fixture
def kms(aws: Any) -> tuple[Any, Counter[str]]:
    return counted_kms()


# --------------------------------------------------------------------------- sealing


def test_round_trip_and_the_stored_form_hides_the_secret(aws, kms) -> None:
    box = make_box(aws, kms[0])
    stored = box.seal(SECRET, REF)
    assert is_sealed(stored) and stored.startswith(PREFIX)
    assert SECRET not in stored
    assert len(stored[len(PREFIX) :].split(":")) == 3
    assert box.seal(SECRET, REF) != stored  # a fresh nonce per value
    assert box.open(stored, REF) == SECRET
    assert make_box(aws, counted_kms()[0]).open(stored, REF) == SECRET  # another process


@pytest.mark.parametrize(
    "elsewhere",
    [
        SecretRef("ACCOUNT#acc_2", "TRUNK#trk_1", "password"),  # another account
        SecretRef("ACCOUNT#acc_1", "TRUNK#trk_2", "password"),  # another trunk, same partition
        SecretRef("ACCOUNT#acc_1", "ACCOUNT", "password"),  # the account item itself
        SecretRef("ACCOUNT#acc_1", "TRUNK#trk_1", "username"),  # another field
    ],
    ids=["other-pk", "other-sk", "same-pk-other-entity", "other-field"],
)
def test_a_value_moved_elsewhere_does_not_open(aws, kms, elsewhere: SecretRef) -> None:
    box = make_box(aws, kms[0])
    stored = box.seal(SECRET, REF)
    with pytest.raises(SecretOpenFailed) as info:
        box.open(stored, elsewhere)
    message = str(info.value)
    assert str(elsewhere) in message and "another item or field" in message
    assert SECRET not in message and stored not in message


def test_an_altered_value_does_not_open(aws, kms) -> None:
    box = make_box(aws, kms[0])
    stored = box.seal(SECRET, REF)
    head, tail = stored[:-2], stored[-2:]
    flipped = head + ("AA" if tail != "AA" else "BB")
    with pytest.raises(SecretOpenFailed):
        box.open(flipped, REF)
    for malformed in (PREFIX, PREFIX + "a:b", PREFIX + "!!:??:**", PREFIX + "AAAA:AAAA:AAAA"):
        with pytest.raises(SecretOpenFailed, match="malformed"):
            box.open(malformed, REF)


def test_a_wrapped_key_opens_only_for_its_table(aws, kms) -> None:
    """The KMS encryption context names the table: another table's box cannot unwrap the key."""
    stored = make_box(aws, kms[0]).seal(SECRET, REF)
    other = make_box(aws, kms[0], table="someone-elses-table")
    with pytest.raises(SecretOpenFailed, match="KMS refused its data key") as info:
        other.open(stored, REF)
    assert SECRET not in str(info.value)


def test_plaintext_from_before_sealing_reads_as_it_is_without_kms(aws, kms) -> None:
    client, calls = kms
    assert make_box(aws, client).open("legacy-password", REF) == "legacy-password"
    assert calls == Counter()


def test_without_a_key_secrets_are_refused_unless_plaintext_is_asked_for(aws, kms) -> None:
    client, calls = kms
    refusing = make_box(aws, client, key_id=None)
    with pytest.raises(SecretsNotConfigured, match="AGERA_KMS_KEY_ID") as info:
        refusing.seal(SECRET, REF)
    assert SECRET not in str(info.value) and str(REF) in str(info.value)
    local = make_box(aws, client, key_id=None, allow_plaintext=True)
    assert local.seal(SECRET, REF) == SECRET
    with pytest.raises(SecretOpenFailed, match="may not start with"):
        local.seal(PREFIX + "x", REF)
    assert calls == Counter()
    # Reading needs no key id: a sealed value names its key.
    sealed = make_box(aws, client).seal(SECRET, REF)
    assert refusing.open(sealed, REF) == SECRET


def test_the_box_follows_the_settings(aws, kms) -> None:
    box = SecretBox.from_settings(Settings.load(secret_key_cache_seconds=42), lambda: kms[0])
    assert (box.key_id, box.table, box.keys.max_age) == (
        Settings.load().kms_key_id,
        aws.table_name,
        42,
    )
    assert box.context == {"purpose": "agera-secret", "table": aws.table_name}
    off = SecretBox.from_settings(Settings.load(kms_key_id="", secrets_plaintext=True), lambda: 1)
    assert (off.seals, off.allow_plaintext) == (False, True)


def test_the_kms_client_is_built_only_when_a_secret_needs_it(aws, kms) -> None:
    built: list[int] = []

    def factory() -> Any:
        built.append(1)
        return kms[0]

    box = SecretBox(factory, key_id=Settings.load().kms_key_id, table=aws.table_name)
    box.open("plaintext", REF)
    assert built == []
    box.seal(SECRET, REF)
    assert built == [1]


# --------------------------------------------------------------------------- the key cache


def refs(count: int) -> list[SecretRef]:
    return [SecretRef(f"ACCOUNT#acc_{i}", "ACCOUNT", "webhook_secret") for i in range(count)]


def test_a_thousand_seals_and_reads_cost_one_kms_call_each_way(aws, kms) -> None:
    client, calls = kms
    writer = make_box(aws, client)
    stored = [(ref, writer.seal(f"secret-{i}", ref)) for i, ref in enumerate(refs(1000))]
    assert calls == Counter({"GenerateDataKey": 1})
    reader_client, reader_calls = counted_kms()
    reader = make_box(aws, reader_client)  # a cold process
    for _ in range(3):
        assert [reader.open(value, ref) for ref, value in stored] == [
            f"secret-{i}" for i in range(1000)
        ]
    assert reader_calls == Counter({"Decrypt": 1})
    # The writer reads back what it sealed without asking KMS.
    writer.open(stored[0][1], stored[0][0])
    assert calls == Counter({"GenerateDataKey": 1})


def test_a_data_key_is_replaced_after_its_uses_and_its_age(aws, kms) -> None:
    client, calls = kms
    clock = FakeClock()
    box = make_box(aws, client, max_uses=100, max_age=60, clock=clock)
    stored = [(ref, box.seal("s", ref)) for ref in refs(250)]
    assert calls["GenerateDataKey"] == 3
    assert len({value.split(":")[3] for _, value in stored}) == 3  # three wrapped keys
    clock.now += 59
    box.seal("s", REF)
    assert calls["GenerateDataKey"] == 3
    clock.now += 1
    box.seal("s", REF)
    assert calls["GenerateDataKey"] == 4
    # Unwrapped keys expire too: after max_age a read asks KMS again (a disabled key bites).
    reader_client, reader_calls = counted_kms()
    reader = make_box(aws, reader_client, max_age=60, clock=clock)
    ref, value = stored[0]
    reader.open(value, ref)
    reader.open(value, ref)
    clock.now += 60
    reader.open(value, ref)
    assert reader_calls == Counter({"Decrypt": 2})


def test_data_keys_cache_is_bounded_least_recently_used_first() -> None:
    keys = DataKeys(size=2, max_age=10)
    for name in (b"a", b"b"):
        keys.remember(name, bytes(32), now=0)
    assert keys.unwrapped(b"a", now=1) is not None  # a is now the most recent
    keys.remember(b"c", bytes(32), now=2)
    assert keys.unwrapped(b"b", now=3) is None
    assert keys.unwrapped(b"a", now=3) is not None and keys.unwrapped(b"c", now=3) is not None
    assert keys.unwrapped(b"a", now=10) is None  # aged out
    assert keys.take_current(now=0) is None  # nothing generated yet
    keys.set_current(bytes(32), b"w", now=0)
    assert keys.take_current(now=9.9) is not None
    assert keys.take_current(now=10) is None


# --------------------------------------------------------------------------- the async box


@pytest.mark.anyio
async def test_async_box_opens_and_concurrent_cold_reads_share_one_decrypt(aws, kms) -> None:
    writer = make_box(aws, kms[0])
    stored = [(ref, writer.seal(f"secret-{i}", ref)) for i, ref in enumerate(refs(50))]
    settings = Settings.load()
    async with aioboto3.Session().client("kms") as client:
        calls: Counter[str] = Counter()

        def count(model: Any, **_: Any) -> None:
            calls[model.name] += 1

        client.meta.events.register("before-call.kms.*", count)
        box = AsyncSecretBox.from_settings(settings, client)
        opened = await asyncio.gather(*(box.open(value, ref) for ref, value in stored))
        assert opened == [f"secret-{i}" for i in range(50)]
        assert calls == Counter({"Decrypt": 1})
        sealed = await asyncio.gather(*(box.seal("edge", ref) for ref in refs(20)))
        assert calls == Counter({"Decrypt": 1, "GenerateDataKey": 1})
        assert [writer.open(v, r) for v, r in zip(sealed, refs(20), strict=True)] == ["edge"] * 20
        with pytest.raises(SecretOpenFailed):
            await box.open(stored[0][1], stored[1][0])


@pytest.mark.anyio
async def test_async_box_a_refused_key_fails_every_waiter_with_its_own_field(aws, kms) -> None:
    stored = make_box(aws, kms[0]).seal(SECRET, REF)
    async with aioboto3.Session().client("kms") as client:
        box = AsyncSecretBox(client, key_id=None, table="someone-elses-table")
        others = [SecretRef("ACCOUNT#acc_1", "TRUNK#trk_1", f"f{i}") for i in range(3)]
        results = await asyncio.gather(
            *(box.open(stored, ref) for ref in itertools.chain([REF], others)),
            return_exceptions=True,
        )
    assert all(isinstance(r, SecretOpenFailed) for r in results)
    assert [str(r).split(" does not open")[0] for r in results] == [str(REF)] + [
        str(o) for o in others
    ]
