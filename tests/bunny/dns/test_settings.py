"""How bunny resolves: flags and resolv.conf together, and values it cannot use refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from bunny.dns import resolvconf
from bunny.dns.settings import ResolverSettings
from bunnyrelay.settings import HostPort, SettingError
from tests.bunny.dns.test_resolvconf import KUBERNETES_POD


@pytest.fixture
def pod_conf(tmp_path: Path) -> Path:
    path = tmp_path / "resolv.conf"
    path.write_text(KUBERNETES_POD + "options timeout:1 attempts:3\n")
    return path


def test_the_file_gives_nameservers_search_ndots_timeout_and_attempts(pod_conf: Path) -> None:
    settings = ResolverSettings.from_sources(resolv_conf=str(pod_conf), nameservers=(), ndots=None)
    assert settings.nameservers == (HostPort("10.0.0.10", 53),)
    assert settings.search[0] == "bunny.svc.cluster.local"
    assert (settings.ndots, settings.timeout, settings.attempts) == (5, 1.0, 3)


def test_flags_win_over_the_file(pod_conf: Path) -> None:
    settings = ResolverSettings.from_sources(
        resolv_conf=str(pod_conf),
        nameservers=[HostPort("127.0.0.1", 5353)],
        ndots=1,
        attempts=None,
        family="ipv4",
    )
    assert settings.nameservers == (HostPort("127.0.0.1", 5353),)
    assert settings.search[0] == "bunny.svc.cluster.local"
    assert (settings.ndots, settings.attempts, settings.family) == (1, 3, "ipv4")


def test_nameserver_flags_without_a_file_read_no_file(
    monkeypatch: pytest.MonkeyPatch, pod_conf: Path
) -> None:
    monkeypatch.setattr(resolvconf, "DEFAULT_PATH", str(pod_conf))
    settings = ResolverSettings.from_sources(
        resolv_conf=None, nameservers=[HostPort("127.0.0.1", 5353)], ndots=None
    )
    assert (settings.search, settings.ndots, settings.timeout) == ((), 1, 2.0)


def test_with_neither_the_system_file_is_read(
    monkeypatch: pytest.MonkeyPatch, pod_conf: Path
) -> None:
    monkeypatch.setattr(resolvconf, "DEFAULT_PATH", str(pod_conf))
    settings = ResolverSettings.from_sources(resolv_conf=None, nameservers=(), ndots=None)
    assert settings.nameservers == (HostPort("10.0.0.10", 53),)
    assert settings.ndots == 5


def test_a_file_without_nameservers_and_no_flag_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "resolv.conf"
    path.write_text("search example.com\n")
    with pytest.raises(SettingError, match="no nameserver"):
        ResolverSettings.from_sources(resolv_conf=str(path), nameservers=(), ndots=None)


@pytest.mark.parametrize(
    ("field", "value"),
    [("family", "ipv5"), ("ndots", 16), ("timeout", 0.0), ("attempts", 0), ("stale_max", -1.0)],
)
def test_settings_reject_values_they_cannot_use(field: str, value: object) -> None:
    with pytest.raises(SettingError, match=field):
        ResolverSettings(nameservers=(HostPort("127.0.0.1", 53),), **{field: value})  # type: ignore[arg-type]
