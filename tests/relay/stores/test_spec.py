"""``--store``, ``--state-dir`` and ``--dedupe-retention``: parsing, defaults and errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from bunnyrelay.settings import SettingError
from relay.cli import build_parser, config_from
from relay.config import RelayConfig
from relay.stores.spec import DEFAULT_STORE, StoreSpec, parse_store


def test_store_values_parse_to_specs() -> None:
    assert parse_store("memory") == StoreSpec("memory")
    assert parse_store("sqlite:jobs.db") == StoreSpec("sqlite", "jobs.db")
    assert parse_store("sqlite:/data/jobs.db") == StoreSpec("sqlite", "/data/jobs.db")
    assert parse_store("sqlite:///data/jobs.db") == StoreSpec("sqlite", "/data/jobs.db")
    assert parse_store("redis://127.0.0.1:6379/0").scheme == "redis"
    for bad in ("", "sqlite:", "sqlite:dir/", "postgres://db/jobs", "Memory"):
        with pytest.raises(SettingError):
            parse_store(bad)


def test_the_default_store_is_sqlite_under_the_state_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("RELAY_STORE", raising=False)
    monkeypatch.setenv("RELAY_STATE_DIR", str(tmp_path / "state"))
    config = config_from(build_parser().parse_args(["serve"]))

    assert config.store == DEFAULT_STORE
    assert config.store_path == tmp_path / "state" / "jobs.sqlite3"
    assert config.dedupe_retention == 24.0
    absolute = RelayConfig(store=parse_store("sqlite:/elsewhere/x.db"), state_dir=tmp_path)
    assert absolute.store_path == Path("/elsewhere/x.db")
    assert RelayConfig(store=StoreSpec("memory")).store_path is None


def test_the_default_state_directory_follows_systemd_then_the_system_then_the_user(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from relay import config as config_module

    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "systemd"))
    assert config_module.default_state_dir() == tmp_path / "systemd"
    monkeypatch.delenv("STATE_DIRECTORY")
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    expected = (
        Path("/var/lib/relay") if Path("/var/lib/relay").is_dir() else tmp_path / "xdg" / "relay"
    )
    assert config_module.default_state_dir() == expected


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["serve", "--store", "mongodb://x"], "--store"),
        (["serve", "--dedupe-retention", "0"], "--dedupe-retention"),
        (["serve", "--state-dir", " "], "--state-dir"),
    ],
)
def test_a_bad_store_flag_exits_2_naming_it(
    argv: list[str], named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(argv)
    assert exited.value.code == 2
    assert named in capsys.readouterr().err
