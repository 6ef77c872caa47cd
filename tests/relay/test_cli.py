"""``relay serve``'s flags and environment: defaults, clear errors, exit statuses."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from pathlib import Path

import pytest

from bunnyrelay.settings import HostPort, SettingError
from lab.processes import child_env
from relay.cli import build_parser, config_from, main
from relay.config import RelayConfig, parse_listen
from relay.listening import first_unprivileged_port
from tests.nonroot import as_nonroot, run

RELAY_COMMAND = Path(sys.executable).with_name("relay")


@pytest.fixture(autouse=True)
def _no_relay_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("RELAY_"):
            monkeypatch.delenv(name)


def _exit_status(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    code = exited.value.code
    return (code if isinstance(code, int) else 1), capsys.readouterr().err


def test_flags_and_environment_build_the_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RELAY_MAX_IN_FLIGHT", "8")
    monkeypatch.setenv("RELAY_LISTEN", "127.0.0.1:7000")
    monkeypatch.setenv("POD_NAME", "relay-7d9f-abcde")
    args = build_parser().parse_args(["serve", "--listen", "[::1]:0", "--grace-period", "2.5"])
    config = config_from(args)

    assert config.listen == HostPort("::1", 0)  # the flag wins over RELAY_LISTEN
    assert config.max_in_flight == 8
    assert config.grace_period == 2.5
    assert config.instance_name == "relay-7d9f-abcde"
    assert config.max_payload_bytes == 1024 * 1024
    assert config.dedupe_capacity == 100_000
    assert (config.log_format, config.log_level) == ("text", "INFO")


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["serve", "--max-in-flight", "0"], "--max-in-flight"),
        (["serve", "--max-payload-bytes", "lots"], "--max-payload-bytes"),
        (["serve", "--grace-period", "-1"], "--grace-period"),
        (["serve", "--listen", "no-port"], "--listen"),
        (["serve", "--listen", "127.0.0.1:70000"], "--listen"),
        (["serve", "--log-format", "xml"], "--log-format"),
        (["serve", "--log-level", "chatty"], "--log-level"),
        (["serve", "--dedupe-capacity", "0"], "--dedupe-capacity"),
        (["serve", "--max-payload-bytes", str(1 << 30)], "--max-payload-bytes"),
        (["serve", "--no-such-flag"], "--no-such-flag"),
        (["serve", "--keep-slower-than", "soon"], "--keep-slower-than"),
        (["serve", "--keep-slower-than", "-1"], "--keep-slower-than"),
        (["serve", "--keep-max-waiting", "0"], "--keep-max-waiting"),
        (["serve", "--keep-max-age", "0"], "--keep-max-age"),
    ],
)
def test_a_bad_flag_exits_2_naming_it(
    argv: list[str], named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = _exit_status(argv, capsys)
    assert code == 2
    assert named in err


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("RELAY_MAX_IN_FLIGHT", "many"),
        ("RELAY_GRACE_PERIOD", "soon"),
        ("RELAY_LISTEN", "nowhere"),
        ("RELAY_LOG_FORMAT", "yaml"),
        ("RELAY_KEEP_SLOWER_THAN", "a while"),
    ],
)
def test_a_bad_environment_variable_exits_2_naming_it(
    variable: str, value: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(variable, value)
    code, err = _exit_status(["serve"], capsys)
    assert code == 2
    assert variable in err


def test_no_command_prints_help_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "serve" in capsys.readouterr().err


def test_help_says_each_default_once(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "10000")
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    shown = " ".join(capsys.readouterr().out.split())

    assert "(default: None)" not in shown
    assert "unset: no such port [env RELAY_HEALTH_LISTEN] --max-payload-bytes N" in shown
    assert "[env RELAY_MAX_PAYLOAD_BYTES] (default: 1048576)" in shown


def test_config_rejects_values_out_of_range() -> None:
    with pytest.raises(SettingError, match="max_in_flight"):
        RelayConfig(max_in_flight=0)
    with pytest.raises(SettingError, match="instance_name"):
        RelayConfig(instance_name=" ")
    assert parse_listen("0.0.0.0:0") == HostPort("0.0.0.0", 0)
    with pytest.raises(SettingError):
        parse_listen(":0")


async def _run_relay(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "RELAY_"))}
    process = await asyncio.create_subprocess_exec(
        str(RELAY_COMMAND),
        *args,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        env={**clean, "RELAY_STORE": "memory", **(env or {})},
    )
    try:
        _, err = await asyncio.wait_for(process.communicate(), timeout=30)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return process.returncode, err.decode()


async def test_a_port_in_use_is_a_clear_error_without_a_traceback() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, err = await _run_relay("serve", "--listen", f"127.0.0.1:{port}")

    assert code == 1
    assert f"cannot listen on 127.0.0.1:{port}: the port is in use by another process" in err
    assert "Traceback" not in err
    assert "add_port" not in err  # gRPC's C core never got to log its own line


@pytest.mark.parametrize(
    ("listen", "code", "message"),
    [
        ("999.1.1.1:1", 2, "999.1.1.1 is not a valid IPv4 address"),
        ("[zz::1]:50051", 2, "zz::1 is not a valid IPv6 address"),
        ("relay_1:50051", 2, "'relay_1' is not an IP address or a host name"),
        ("192.0.2.1:50051", 1, "it is not an address of this machine"),
    ],
)
async def test_a_listen_address_relay_cannot_have_is_named_without_grpc_noise(
    listen: str, code: int, message: str
) -> None:
    exited, err = await _run_relay("serve", "--listen", listen)
    assert exited == code
    assert message in err
    assert "Traceback" not in err
    assert "add_port" not in err


async def test_a_bad_otel_variable_exits_2_naming_it() -> None:
    code, err = await _run_relay(
        "serve", "--listen", "127.0.0.1:0", env={"OTEL_TRACES_SAMPLER": "sometimes"}
    )
    assert code == 2
    assert "OTEL_TRACES_SAMPLER" in err
    assert "Traceback" not in err


async def test_a_privileged_port_as_a_user_without_privileges_says_what_it_needs() -> None:
    below = first_unprivileged_port()
    if below == 0:
        pytest.skip("this kernel lets every user bind every port")
    relay = [str(RELAY_COMMAND), "serve", "--listen", f"127.0.0.1:{below - 1}"]
    finished = await run(as_nonroot(relay), env={**child_env(), "RELAY_STORE": "memory"})
    assert finished.code == 1
    assert f"ports below {below} need root or the CAP_NET_BIND_SERVICE capability" in finished.err
    assert "Traceback" not in finished.err
    assert "add_port" not in finished.err
