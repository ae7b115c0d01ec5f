"""Masked secrets show the last four characters of long secrets and nothing of short ones."""

from __future__ import annotations

import pytest

from functions.api.masking import mask


@pytest.mark.parametrize(
    ("secret", "shown"),
    [
        (None, None),
        ("", None),
        ("12345678", "…"),
        ("123456789", "…6789"),
        ("sk-abcdefWXYZ", "…WXYZ"),
    ],
)
def test_mask(secret, shown) -> None:
    assert mask(secret) == shown
