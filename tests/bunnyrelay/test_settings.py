"""Flags and their environment variables: one parser, clear errors."""

import pytest

from bunnyrelay.settings import (
    EnvArgumentParser,
    HostPort,
    SettingError,
    parse_host_port,
    parse_ip_port,
    positive_int,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("relay.private.aws.internal:50051", HostPort("relay.private.aws.internal", 50051)),
        ("127.0.0.1:1", HostPort("127.0.0.1", 1)),
        ("[::1]:65535", HostPort("::1", 65535)),
    ],
)
def test_host_port_parses(text: str, expected: HostPort) -> None:
    assert parse_host_port(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("relay", "port is missing"),
        ("relay:0", "1 to 65535"),
        ("relay:http", "1 to 65535"),
        (":50051", "host is empty"),
        ("[::1", "missing ']'"),
    ],
)
def test_host_port_rejects_with_reason(text: str, message: str) -> None:
    with pytest.raises(SettingError, match=message):
        parse_host_port(text)


def test_nameserver_must_be_an_ip_and_defaults_to_port_53() -> None:
    assert parse_ip_port("10.0.0.10", default_port=53) == HostPort("10.0.0.10", 53)
    assert parse_ip_port("::1", default_port=53) == HostPort("::1", 53)
    with pytest.raises(SettingError, match="not an IP address"):
        parse_ip_port("dns.example:53", default_port=53)


def _parser() -> EnvArgumentParser:
    parser = EnvArgumentParser(prog="t", env_prefix="T_")
    parser.option("--count", parse=positive_int, default=1, help="n")
    parser.option("--server", repeat=True, help="s")
    parser.option("--json", switch=True, default=False, help="j")
    return parser


def test_environment_supplies_defaults_and_flags_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("T_COUNT", "3")
    monkeypatch.setenv("T_SERVER", "a,b")
    monkeypatch.setenv("T_JSON", "true")
    args = _parser().parse_args([])
    assert (args.count, args.server, args.json) == (3, ["a", "b"], True)
    args = _parser().parse_args(["--count", "5", "--server", "c", "--no-json"])
    assert (args.count, args.server, args.json) == (5, ["c"], False)


def test_bad_environment_value_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("T_COUNT", "many")
    with pytest.raises(SystemExit) as exit_info:
        _parser().parse_args([])
    assert exit_info.value.code == 2
    assert "T_COUNT" in capsys.readouterr().err


def test_bad_flag_value_says_why(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        _parser().parse_args(["--count", "0"])
    assert "must be at least 1" in capsys.readouterr().err
