"""The route cache's settings: defaults, 0 turns a kind's cache off, bad values name it."""

from __future__ import annotations

import pytest

from shared.settings import Settings, SettingsError, describe


def test_defaults_and_environment() -> None:
    defaults = Settings.load({})
    assert (
        defaults.route_cache_seconds,
        defaults.account_cache_seconds,
        defaults.route_cache_size,
    ) == (30.0, 5.0, 10000)
    off = Settings.load(
        {
            "AGERA_ROUTE_CACHE_SECONDS": "0",
            "AGERA_ACCOUNT_CACHE_SECONDS": "0",
            "AGERA_ROUTE_CACHE_SIZE": "1",
        }
    )
    assert (off.route_cache_seconds, off.account_cache_seconds, off.route_cache_size) == (0, 0, 1)
    listed = {name for name, _, _ in describe()}
    assert {"AGERA_ROUTE_CACHE_SECONDS", "AGERA_ROUTE_CACHE_SIZE"} <= listed


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("AGERA_ROUTE_CACHE_SECONDS", "-1"),
        ("AGERA_ACCOUNT_CACHE_SECONDS", "3601"),
        ("AGERA_ROUTE_CACHE_SIZE", "0"),
    ],
)
def test_out_of_range_values_name_the_variable(variable: str, value: str) -> None:
    with pytest.raises(SettingsError, match=variable):
        Settings.load({variable: value})
