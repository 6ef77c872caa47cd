"""Flags and their environment variables: one parser, clear errors."""

from dataclasses import dataclass

import pytest

from bunnyrelay.settings import (
    EnvArgumentParser,
    HostPort,
    SettingError,
    add_options,
    from_namespace,
    parse_host_port,
    parse_ip_port,
    positive_int,
    setting,
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


# --- a config object whose fields are its flags ------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Config:
    count: int = setting(1, doc="how many", parse=positive_int, metavar="N")
    server: tuple[str, ...] = setting((), doc="a server (repeat)", repeat=True)
    loud: bool = setting(False, doc="say more", switch=True)

    def __post_init__(self) -> None:
        if self.loud and self.count > 3:
            raise SettingError("count: at most 3 when loud")


def test_a_config_declares_its_flags_with_their_help_and_is_built_from_them(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("T_SERVER", "a,b")
    parser = EnvArgumentParser(prog="t", env_prefix="T_")
    add_options(parser, _Config, defaults={"count": 2})

    config = from_namespace(_Config, parser.parse_args(["--loud"]), env_prefix="T_")

    assert config == _Config(count=2, server=("a", "b"), loud=True)
    with pytest.raises(SystemExit):
        parser.parse_args(["--help"])
    shown = capsys.readouterr().out
    assert "how many [env T_COUNT] (default: 2)" in " ".join(shown.split())
    with pytest.raises(SettingError, match=r"^--count \(or T_COUNT\): at most 3 when loud$"):
        from_namespace(_Config, parser.parse_args(["--loud", "--count", "4"]), env_prefix="T_")


def test_help_shows_a_default_once_and_none_when_there_is_none(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "10000")
    parser = EnvArgumentParser(prog="t", env_prefix="T_")
    parser.option("--count", parse=positive_int, default=1, help="how many")
    parser.option("--port", help="also listen here; default: no such port")
    parser.option("--name", help="a name")
    parser.option("--server", help="a server (repeat)", default=[], repeat=True)

    with pytest.raises(SystemExit):
        parser.parse_args(["--help"])
    shown = " ".join(capsys.readouterr().out.split())

    assert "how many [env T_COUNT] (default: 1)" in shown
    assert "default: no such port [env T_PORT] --name" in shown
    assert "a name [env T_NAME] --server" in shown
    assert shown.endswith("a server (repeat) [env T_SERVER]")
