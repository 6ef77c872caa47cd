"""resolv.conf is read as glibc reads it, and what bunny cannot use is named by file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from bunny.dns.resolvconf import ResolvConf, parse_resolv_conf, read_resolv_conf
from bunnyrelay.settings import HostPort, SettingError

KUBERNETES_POD = """\
# written by the kubelet
search bunny.svc.cluster.local svc.cluster.local cluster.local
nameserver 10.0.0.10
options ndots:5
"""


def test_a_kubernetes_pod_resolv_conf() -> None:
    assert parse_resolv_conf(KUBERNETES_POD) == ResolvConf(
        nameservers=(HostPort("10.0.0.10", 53),),
        search=("bunny.svc.cluster.local", "svc.cluster.local", "cluster.local"),
        ndots=5,
        timeout=5.0,
        attempts=2,
    )


def test_nameservers_take_an_optional_port_and_ipv6_brackets() -> None:
    conf = parse_resolv_conf(
        "nameserver 127.0.0.1:5353\nnameserver [::1]:5300\nnameserver fd00::53\n"
    )
    assert conf.nameservers == (
        HostPort("127.0.0.1", 5353),
        HostPort("::1", 5300),
        HostPort("fd00::53", 53),
    )


def test_only_the_first_three_nameservers_count_like_glibc() -> None:
    text = "".join(f"nameserver 10.0.0.{n}\n" for n in range(1, 6))
    assert [ns.host for ns in parse_resolv_conf(text).nameservers] == [
        "10.0.0.1",
        "10.0.0.2",
        "10.0.0.3",
    ]


def test_the_last_search_or_domain_line_wins() -> None:
    assert parse_resolv_conf("search a.example b.example\ndomain c.example\n").search == (
        "c.example",
    )
    assert parse_resolv_conf("domain c.example\nsearch A.example. b.example\n").search == (
        "a.example",
        "b.example",
    )


def test_comments_blank_lines_and_unknown_things_are_ignored() -> None:
    conf = parse_resolv_conf(
        "; a comment\n"
        "\n"
        "nameserver 10.0.0.10  # the cluster DNS\n"
        "sortlist 130.155.160.0/255.255.240.0\n"
        "options rotate edns0 single-request timeout:3 attempts:4 use-vc\n"
    )
    assert conf.nameservers == (HostPort("10.0.0.10", 53),)
    assert (conf.timeout, conf.attempts, conf.ndots) == (3.0, 4, 1)


def test_options_are_capped_as_glibc_caps_them() -> None:
    conf = parse_resolv_conf("options ndots:40 timeout:90 attempts:9\n")
    assert (conf.ndots, conf.timeout, conf.attempts) == (15, 30.0, 5)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("nameserver dns.example", "/etc/x:2: nameserver 'dns.example': "),
        ("nameserver 10.0.0.1:99999", "/etc/x:2: nameserver '10.0.0.1:99999': "),
        ("nameserver", "/etc/x:2: 'nameserver' needs an IP address"),
        ("options ndots:five", "/etc/x:2: options ndots:five: 'five' is not a whole number"),
        ("options attempts:0", "/etc/x:2: options attempts:0: must be at least 1"),
        ("search", "/etc/x:2: 'search' needs at least one domain"),
    ],
)
def test_what_cannot_be_used_is_named_by_file_line_and_value(line: str, message: str) -> None:
    with pytest.raises(SettingError) as caught:
        parse_resolv_conf(f"# fine\n{line}\n", path="/etc/x")
    assert str(caught.value).startswith(message)


def test_a_missing_file_names_the_file_and_the_way_out(tmp_path: Path) -> None:
    missing = tmp_path / "resolv.conf"
    with pytest.raises(SettingError, match=f"{missing}: no such file") as caught:
        read_resolv_conf(missing)
    assert "--resolv-conf (BUNNY_RESOLV_CONF)" in str(caught.value)
    assert "--nameserver IP" in str(caught.value)


def test_a_line_that_cannot_be_used_in_a_file_says_the_way_out_too(tmp_path: Path) -> None:
    path = tmp_path / "resolv.conf"
    path.write_text("nameserver 10.0.0.10\noptions ndots:many\n")
    with pytest.raises(SettingError, match=f"{path}:2: options ndots:many") as caught:
        read_resolv_conf(path)
    assert "fix the file, or give --nameserver IP" in str(caught.value)
