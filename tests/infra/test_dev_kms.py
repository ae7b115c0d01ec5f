"""The local stack's KMS key (infra/dev_kms.py)."""

from __future__ import annotations

import pytest

from infra.dev_kms import create_local_key

pytestmark = pytest.mark.xdist_group("moto")


def test_a_second_local_stack_on_the_same_moto_gets_the_same_key(
    moto_endpoint: str, kms_key_arn: str
) -> None:
    # moto servers in one process share their backends: the alias exists after the first stack.
    assert create_local_key(moto_endpoint) == kms_key_arn
    assert create_local_key(moto_endpoint) == kms_key_arn
