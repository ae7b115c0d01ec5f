from __future__ import annotations

import pytest

from shared.settings import Settings, SettingsError, describe


def test_defaults_without_environment() -> None:
    s = Settings.load({})
    assert s.table_name == "agera"
    assert s.sip_port == 5060
    assert s.api_key_cache_seconds == 5.0
    assert s.ssrf_allow_list == ()
    assert s.advertised_address == "127.0.0.1"


def test_environment_is_read_and_overrides_win() -> None:
    env = {"AGERA_SIP_PORT": "5070", "AGERA_TABLE_NAME": "t1", "AGERA_ECHO_ENABLED": "false"}
    s = Settings.load(env, table_name="t2")
    assert (s.sip_port, s.table_name, s.echo_enabled) == (5070, "t2", False)


def test_cidr_list_is_split_and_checked() -> None:
    s = Settings.load({"AGERA_SSRF_ALLOW_LIST": "127.0.0.0/8, ::1/128"})
    assert s.ssrf_allow_list == ("127.0.0.0/8", "::1/128")
    with pytest.raises(SettingsError, match=r"^AGERA_SSRF_ALLOW_LIST: 'nope' is not an IP network"):
        Settings.load({"AGERA_SSRF_ALLOW_LIST": "10.0.0.0/8,nope"})


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"AGERA_SIP_PORT": "abc"}, r"^AGERA_SIP_PORT: .*integer.* \(got 'abc'\)$"),
        ({"AGERA_SIP_PORT": "70000"}, r"^AGERA_SIP_PORT: .*less than or equal to 65535"),
        ({"AGERA_ECHO_ENABLED": "perhaps"}, r"^AGERA_ECHO_ENABLED: .*boolean"),
        ({"AGERA_RTP_PORT_MIN": "3000", "AGERA_RTP_PORT_MAX": "2000"}, r"rtp_port_max must be"),
    ],
)
def test_bad_values_name_the_variable_in_one_line(env: dict, message: str) -> None:
    with pytest.raises(SettingsError, match=message) as info:
        Settings.load(env)
    assert "\n" not in str(info.value)


def test_unknown_override_is_refused() -> None:
    with pytest.raises(SettingsError):
        Settings.load({}, no_such_setting=1)


def test_describe_lists_every_setting() -> None:
    names = [row[0] for row in describe()]
    assert len(names) == len(Settings.model_fields)
    assert "AGERA_TABLE_NAME" in names and all(n.startswith("AGERA_") for n in names)
