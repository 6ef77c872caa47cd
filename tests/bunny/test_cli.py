"""The ``bunny`` command as users run it: names from the hosts file with default flags, and
the files it reads (resolv.conf, the hosts file) refused with a message saying which file,
what is wrong and what to do, exit status 2, never a traceback.

Each test runs the real command in a process of its own; where a file's permissions are
the subject, that process runs as an unprivileged user (:mod:`tests.nonroot`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.dnsserver import ZoneServer
from lab.processes import run_bunny
from tests.bunny.conftest import RELAY
from tests.conftest import StartRelay
from tests.nonroot import IS_ROOT, NONROOT_UID, as_nonroot
from tests.nonroot import shared_dir as nonroot_dir

# --- names from the hosts file, with default flags ---------------------------------------------


async def test_bunny_resolve_localhost_answers_from_the_hosts_file() -> None:
    code, out, err = await run_bunny("resolve", "localhost", "--json", timeout=30)

    assert code == 0, err
    answer = json.loads(out)
    assert answer["source"] == "hosts"
    assert "127.0.0.1" in answer["addresses"]
    assert answer["queries"] == []


async def test_bunny_submit_to_localhost_works_with_default_flags(start_relay: StartRelay) -> None:
    async with start_relay("127.0.0.1:0") as relay:
        code, out, err = await run_bunny(
            "submit", "--target", f"localhost:{relay.port}", "--json", timeout=60
        )

    assert code == 0, err
    (line,) = [json.loads(text) for text in out.splitlines()]
    assert line["status"] == "SUCCEEDED"
    assert line["dns_source"] == "hosts"


async def test_a_hosts_alias_routes_around_dns_and_none_turns_the_hosts_file_off(
    dns: ZoneServer, tmp_path: Path
) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_text(f"127.0.0.1 localhost\n10.20.0.99 {RELAY}\n")
    ask = ("resolve", RELAY, "--json", "--nameserver", str(dns.address))

    code, out, err = await run_bunny(*ask, "--hosts-file", str(hosts), timeout=30)
    assert code == 0, err
    assert (json.loads(out)["addresses"], json.loads(out)["source"]) == (["10.20.0.99"], "hosts")
    assert not dns.log

    code, out, err = await run_bunny(*ask, env={"BUNNY_HOSTS_FILE": "none"}, timeout=30)
    assert code == 0, err
    assert json.loads(out)["source"] == "wire"
    assert {entry.qname for entry in dns.log} == {RELAY}


# --- the files bunny reads, when they cannot be used -----------------------------------------


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory every user may enter (pytest's own are private to the user running it)."""
    with nonroot_dir("bunny-files-") as path:
        yield path


FILES = {
    # flag, the way out the message gives, the extra flags a resolve needs with it
    "resolv.conf": ("--resolv-conf", "--nameserver IP", ()),
    "the hosts file": ("--hosts-file", "--hosts-file none", ("--nameserver", "127.0.0.1:9")),
}


@pytest.mark.parametrize("what", list(FILES))
@pytest.mark.parametrize("case", ["missing", "a directory", "unreadable", "not text", "garbage"])
async def test_a_file_bunny_cannot_use_is_named_with_what_to_do_and_no_traceback(
    shared_dir: Path, what: str, case: str
) -> None:
    flag, way_out, extra = FILES[what]
    path = shared_dir / "file"
    place = None
    expected: str
    if case == "missing":
        expected = "no such file"
    elif case == "a directory":
        path.mkdir()
        expected = "is a directory"
    elif case == "unreadable":
        path.write_text("nameserver 10.0.0.10\n127.0.0.1 localhost\n")
        path.chmod(0)
        place = as_nonroot
        expected = "permission denied for "
    elif case == "not text":
        path.write_bytes(b"\x7fELF\x02\x01\x01\x00" + os.urandom(64))
        expected = "it is not text"
    else:
        path.write_text("nameserver dns.example\n" if what == "resolv.conf" else "dns.example a\n")
        expected = "is not an IP address"

    code, out, err = await run_bunny(
        "resolve", "relay.example", flag, str(path), *extra, place=place, timeout=30
    )

    assert code == 2, (out, err)
    assert "Traceback" not in err
    message = err.strip().splitlines()[-1]
    assert message.startswith(f"bunny: error: {path}"), message
    assert expected in message, message
    assert way_out in message, message
    if case == "unreadable" and IS_ROOT:
        assert f"uid {NONROOT_UID}" in message
    assert not out


async def test_diagnose_says_the_name_is_answered_from_the_hosts_file(
    dns: ZoneServer, start_relay: StartRelay, tmp_path: Path
) -> None:
    hosts, conf = tmp_path / "hosts", tmp_path / "resolv.conf"
    hosts.write_text(f"127.0.0.1 {RELAY}\n")
    conf.write_text(f"nameserver {dns.address}\nsearch svc.cluster.local\noptions ndots:5\n")
    async with start_relay("127.0.0.1:0") as relay:
        target = f"{RELAY}:{relay.port}"
        ask = ("diagnose", target, "--resolv-conf", str(conf), "--hosts-file", str(hosts))
        code, out, err = await run_bunny(*ask, "--json", timeout=60)
        text_code, text, _ = await run_bunny(*ask, timeout=60)

    assert code == 0, err
    diagnosis = json.loads(out)
    assert diagnosis["search"]["source"] == "hosts"
    assert diagnosis["search"]["queries_sent"] == 0
    assert [r["address"] for r in diagnosis["relay"]] == [f"127.0.0.1:{relay.port}"]
    assert not dns.log
    assert text_code == 0
    assert "is in the hosts file" in text
