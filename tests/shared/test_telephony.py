"""normalise_cloudonix_domain: the one spelling the API stores and the edge looks up."""

from __future__ import annotations

import pytest

from shared.telephony import normalise_cloudonix_domain


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (" Acme. ", "acme.cloudonix.net"),
        ("acme", "acme.cloudonix.net"),
        ("ACME.cloudonix.NET", "acme.cloudonix.net"),
        ("acme.cloudonix.net.", "acme.cloudonix.net"),
        ("Sub.Example.com.", "sub.example.com"),
        ("\tsub.example.com\n", "sub.example.com"),
        ("my-tenant", "my-tenant.cloudonix.net"),
        ("", ""),
        ("   ", ""),
        (".", ""),
    ],
)
def test_normalise_cloudonix_domain(raw: str, expected: str) -> None:
    assert normalise_cloudonix_domain(raw) == expected


def test_normalising_twice_changes_nothing() -> None:
    for raw in (" Acme. ", "Sub.Example.com.", "x", ""):
        once = normalise_cloudonix_domain(raw)
        assert normalise_cloudonix_domain(once) == once
