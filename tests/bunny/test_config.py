"""bunny's settings: one frozen object whose fields are the commands' flags, each documented
once (that text is the flag's --help), checked when built, with errors naming flag and variable."""

from __future__ import annotations

import dataclasses
import re

import pytest

from bunny.cli import COMMANDS, build_parser, main
from bunny.config import BunnyConfig
from bunnyrelay.settings import SettingError, flag_of, from_namespace


def _help(command: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("COLUMNS", "10000")  # each option's help on one line
    with pytest.raises(SystemExit):
        build_parser().parse_args([command, "--help"])
    return " ".join(capsys.readouterr().out.split())


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_flag_is_a_documented_field_and_its_help_is_that_documentation(
    command: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    documented = {f.name: f.metadata["doc"] for f in dataclasses.fields(BunnyConfig)}
    shown = _help(command, capsys, monkeypatch)

    for name in COMMANDS[command].flags:
        assert documented[name], name
        doc = COMMANDS[command].docs.get(name, documented[name])
        assert flag_of(name) in shown
        assert " ".join(doc.split()) in shown, name
        assert f"BUNNY_{name.upper()}" in shown


@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_command_help_names_only_flags_that_command_has(
    command: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    shown = _help(command, capsys, monkeypatch)
    has = {flag_of(name) for name in COMMANDS[command].flags} | {"--help"}
    has |= {f"--no-{flag[2:]}" for flag in has}

    named = set(re.findall(r"--[a-z][a-z-]*[a-z]", shown))
    assert named - has == set()


def test_commands_keep_their_own_defaults_where_they_differ() -> None:
    def config(*argv: str) -> BunnyConfig:
        return from_namespace(BunnyConfig, build_parser().parse_args(argv), env_prefix="BUNNY_")

    assert config("submit").concurrency == 8
    assert config("bench").concurrency == 64
    assert config("submit").family == "any"
    assert config("diagnose", "relay.example:50051").family == "ipv4"
    assert config("submit").attempts is None, "retries bounded by the deadline by default"
    assert config("resolve", "relay.example").hosts_file == "/etc/hosts"


def test_the_environment_fills_in_and_the_command_line_wins(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BUNNY_NAMESERVER", "10.0.0.10,10.0.0.11:5353")
    monkeypatch.setenv("BUNNY_HOSTS_FILE", "none")
    monkeypatch.setenv("BUNNY_TIMEOUT", "7")
    args = build_parser().parse_args(["submit", "--timeout", "9"])
    config = from_namespace(BunnyConfig, args, env_prefix="BUNNY_")

    assert [str(server) for server in config.nameserver] == ["10.0.0.10:53", "10.0.0.11:5353"]
    assert config.hosts_file is None
    assert config.timeout == 9.0


def test_settings_that_do_not_go_together_name_the_flag_and_its_variable(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["submit", "--target", "127.0.0.1:1", "--tls-cert", "/x.pem"])

    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "--tls-cert (or BUNNY_TLS_CERT): --tls-cert and --tls-key must be given together" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"concurrency": 0}, "concurrency"),
        ({"timeout": 0.0}, "timeout"),
        ({"keepalive": 0.5}, "keepalive"),
        ({"family": "ipv5"}, "family"),
        ({"ndots": 16}, "ndots"),
        ({"log_level": "LOUD"}, "log_level"),
    ],
)
def test_the_object_refuses_what_it_cannot_use_when_built_in_code_too(
    values: dict[str, object], field: str
) -> None:
    with pytest.raises(SettingError, match=f"^{field}: "):
        BunnyConfig(**values)  # type: ignore[arg-type]


def test_it_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        BunnyConfig().timeout = 1.0  # type: ignore[misc]
