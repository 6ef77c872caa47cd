"""The relay pool: the settings of its connections to relay."""

from __future__ import annotations

import re

import pytest

from bunny.cli import build_parser
from bunny.keepalive import Keepalive


def test_keepalive_pings_by_default_and_zero_turns_only_the_pings_off() -> None:
    default = dict(Keepalive().channel_options())
    off = dict(Keepalive(interval_s=0).channel_options())

    assert default["grpc.keepalive_time_ms"] == 30_000
    assert default["grpc.http2.ping_timeout_ms"] == default["grpc.keepalive_timeout_ms"] == 10_000
    assert "grpc.keepalive_time_ms" not in off
    # Reconnecting stays prompt either way (gRPC's own cap is two minutes).
    assert default["grpc.max_reconnect_backoff_ms"] == off["grpc.max_reconnect_backoff_ms"] == 1000


@pytest.mark.parametrize(
    ("interval", "timeout", "message"),
    [(0.5, 10.0, "at least 1 s"), (-1.0, 10.0, "0 (off) or more"), (30.0, 0.0, "more than 0")],
)
def test_keepalive_rejects_what_relay_would_refuse_or_grpc_cannot_do(
    interval: float, timeout: float, message: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        Keepalive(interval_s=interval, timeout_s=timeout)


def test_bunny_submit_keepalive_flag_and_variable_say_what_is_wrong(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert build_parser().parse_args(["submit", "--keepalive", "0"]).keepalive == 0
    with pytest.raises(SystemExit) as flag:
        build_parser().parse_args(["submit", "--keepalive", "0.2"])
    assert flag.value.code == 2
    assert "0 (off) or at least 1 s" in capsys.readouterr().err

    monkeypatch.setenv("BUNNY_KEEPALIVE", "often")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["submit"])
    assert "BUNNY_KEEPALIVE" in capsys.readouterr().err
