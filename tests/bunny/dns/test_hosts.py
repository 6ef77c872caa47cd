"""The hosts file before DNS, as glibc's ``hosts: files dns``: read as glibc reads it,
answered from without a query, labelled ``hosts``, and read again when it changes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from bunny.dns import hosts as hosts_module
from bunny.dns.hosts import HostsFile, parse_hosts
from bunnyrelay import semconv
from bunnyrelay.settings import SettingError
from lab.dnsserver import ZoneServer
from tests.bunny.conftest import RELAY, RELAY_IP, MakeResolver, named, telemetry_finished
from tests.fakeclock import FakeClock

# As the kubelet writes a pod's /etc/hosts, with a hostAliases entry at the end.
POD_HOSTS = f"""\
# Kubernetes-managed hosts file.
127.0.0.1\tlocalhost
::1\tlocalhost ip6-localhost ip6-loopback
fe00::0\tip6-localnet
10.244.1.7\tbunny-7d9f-x2x\t# the pod itself

# Entries added by HostAliases.
10.20.0.99\t{RELAY}\trelay-alias
"""


def test_a_pod_hosts_file_is_read_as_glibc_reads_it() -> None:
    table = parse_hosts(POD_HOSTS)

    assert table["localhost"] == ("127.0.0.1", "::1")
    assert table["ip6-loopback"] == ("::1",)
    assert table["bunny-7d9f-x2x"] == ("10.244.1.7",)
    assert table[RELAY] == ("10.20.0.99",)
    assert table["relay-alias"] == ("10.20.0.99",)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("10.0.0.300 relay", "not an IP address"),
        ("relay.example 10.0.0.1", "not an IP address"),
        ("10.0.0.1", "has no name"),
    ],
)
def test_a_line_bunny_cannot_use_is_named_with_what_to_do(line: str, message: str) -> None:
    with pytest.raises(SettingError, match=message) as caught:
        parse_hosts(f"127.0.0.1 localhost\n{line}\n", path="/etc/hosts")
    assert str(caught.value).startswith("/etc/hosts:2: ")
    assert "--hosts-file none" in str(caught.value)


def _rewrite(path: Path, text: str) -> None:
    """New contents, with a modification time of their own whatever the clock's resolution."""
    before = path.stat().st_mtime_ns
    path.write_text(text)
    os.utime(path, ns=(before + 1_000_000_000, before + 1_000_000_000))


@pytest.fixture
def hosts_path(tmp_path: Path) -> Path:
    path = tmp_path / "hosts"
    path.write_text(POD_HOSTS)
    return path


def test_names_match_as_asked_without_case_and_without_the_search_list(hosts_path: Path) -> None:
    listed = HostsFile(hosts_path, ("A", "AAAA"))

    upper = listed.answer("LocalHost", 0.0)
    assert upper is not None
    assert (upper.addresses, upper.source, upper.name) == (
        ("127.0.0.1", "::1"),
        "hosts",
        "LocalHost",
    )
    # glibc does not match "localhost." to "localhost", nor apply the search list.
    assert listed.answer("localhost.", 0.0) is None
    assert listed.answer("relay", 0.0) is None


def test_only_the_family_asked_answers_and_a_name_without_it_goes_to_dns(
    hosts_path: Path,
) -> None:
    ipv4 = HostsFile(hosts_path, ("A",))
    ipv6 = HostsFile(hosts_path, ("AAAA",))

    assert ipv4.answer("localhost", 0.0) is not None
    assert ipv4.answer("localhost", 0.0).addresses == ("127.0.0.1",)  # type: ignore[union-attr]
    assert ipv6.answer("localhost", 0.0).addresses == ("::1",)  # type: ignore[union-attr]
    assert ipv4.answer("ip6-loopback", 0.0) is None


def test_the_file_is_read_again_when_it_changes_and_only_looked_at_otherwise(
    hosts_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads: list[str] = []
    real_read = hosts_module.read_hosts

    def counting_read(path: str | Path) -> dict[str, tuple[str, ...]]:
        reads.append(str(path))
        return real_read(path)

    monkeypatch.setattr(hosts_module, "read_hosts", counting_read)
    clock = FakeClock()
    listed = HostsFile(hosts_path, ("A",), clock=clock, check_interval=1.0)
    for _ in range(1000):
        listed.answer(RELAY, clock())
    clock.advance(5)
    listed.answer(RELAY, clock())
    assert len(reads) == 1, "unchanged: looked at (stat), never read again"

    _rewrite(hosts_path, POD_HOSTS.replace("10.20.0.99", "10.20.0.42"))
    clock.advance(1.0)
    changed = listed.answer(RELAY, clock())
    assert len(reads) == 2
    assert changed is not None
    assert changed.addresses == ("10.20.0.42",)


def test_a_change_is_seen_at_the_next_look_and_a_broken_one_keeps_what_was_read(
    hosts_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock()
    listed = HostsFile(hosts_path, ("A",), clock=clock, check_interval=1.0)
    _rewrite(hosts_path, POD_HOSTS.replace("10.20.0.99", "10.20.0.42"))

    before = listed.answer(RELAY, clock())
    clock.advance(1.0)
    after = listed.answer(RELAY, clock())

    assert before is not None
    assert before.addresses == ("10.20.0.99",)
    assert after is not None
    assert after.addresses == ("10.20.0.42",)

    _rewrite(hosts_path, "not-an-address relay\n")
    clock.advance(1.0)
    kept = listed.answer(RELAY, clock())

    assert kept is not None
    assert kept.addresses == ("10.20.0.42",)
    assert "cannot be used" in caplog.text


async def test_a_name_in_the_hosts_file_is_answered_from_it_and_dns_is_not_asked(
    dns: ZoneServer, make_resolver: MakeResolver, hosts_path: Path, spans: InMemorySpanExporter
) -> None:
    dns.set_records(f"other.{RELAY}", "A", [RELAY_IP])
    resolver = make_resolver(hosts_file=str(hosts_path))

    listed = await resolver.resolve(RELAY)
    fast = resolver.cached(RELAY)
    elsewhere = await resolver.resolve(f"other.{RELAY}.")
    await telemetry_finished()

    assert (listed.addresses, listed.source, listed.queries) == (("10.20.0.99",), "hosts", ())
    assert fast is not None
    assert fast.source == "hosts"
    assert [entry.qname for entry in dns.log] == [f"other.{RELAY}"]
    assert elsewhere.source == "wire"
    hosts_lookup, _ = named(spans, "dns.lookup")
    assert (hosts_lookup.attributes or {})[semconv.DNS_SOURCE] == "hosts"
    assert (hosts_lookup.attributes or {})[semconv.DNS_QUERIES_SENT] == 0
    assert named(spans, "dns.query") == []


async def test_the_hosts_file_wins_over_an_answer_dns_gave_before(
    dns: ZoneServer, make_resolver: MakeResolver, tmp_path: Path
) -> None:
    path = tmp_path / "hosts"
    path.write_text("127.0.0.1 localhost\n")
    clock = FakeClock()
    resolver = make_resolver(hosts_file=str(path), clock=clock)
    from_dns = await resolver.resolve(RELAY)
    _rewrite(path, f"127.0.0.1 localhost\n10.20.0.77 {RELAY}\n")
    clock.advance(2.0)

    listed = resolver.cached(RELAY)

    assert from_dns.addresses == (RELAY_IP,)
    assert listed is not None
    assert (listed.addresses, listed.source) == (("10.20.0.77",), "hosts")
