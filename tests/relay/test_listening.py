"""The listen address: a bad one is a clear message, before gRPC's C core gets to log its own."""

from __future__ import annotations

import asyncio
import socket

import pytest

from bunnyrelay.settings import HostPort, SettingError
from relay.errors import ListenError
from relay.listening import check_host, try_bind


@pytest.mark.parametrize(
    "host", ["0.0.0.0", "127.0.0.1", "::", "::1", "fe80::1%eth0", "localhost", "relay.example."]
)
def test_addresses_and_host_names_pass(host: str) -> None:
    check_host(host)


@pytest.mark.parametrize(
    ("host", "problem"),
    [
        ("999.1.1.1", "999.1.1.1 is not a valid IPv4 address"),
        ("1.2.3", "1.2.3 is not a valid IPv4 address"),
        ("1.2.3.4.5", "1.2.3.4.5 is not a valid IPv4 address"),
        ("zz::1", "zz::1 is not a valid IPv6 address"),
        ("a_b", "'a_b' is not an IP address or a host name"),
        ("-relay", "'-relay' is not an IP address or a host name"),
        ("a" * 64, "is not an IP address or a host name"),
    ],
)
def test_a_host_that_cannot_be_an_address_is_named(host: str, problem: str) -> None:
    with pytest.raises(SettingError, match=problem):
        check_host(host)


async def test_a_free_port_binds() -> None:
    await try_bind(HostPort("127.0.0.1", 0))


async def test_a_port_in_use_says_so() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ListenError, match="the port is in use by another process"):
            await try_bind(HostPort("127.0.0.1", port))


async def test_an_address_of_another_machine_says_so() -> None:
    # 192.0.2.0/24 is TEST-NET-1: documentation only, on no interface of this machine.
    with pytest.raises(ListenError, match=r"192\.0\.2\.1:50051: it is not an address of this"):
        await try_bind(HostPort("192.0.2.1", 50051))


async def test_a_host_name_that_does_not_resolve_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    # A fake resolver: a real lookup of a name that does not exist would leave this machine.
    async def fake_getaddrinfo(*args: object, **kwargs: object) -> list[object]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    loop = asyncio.get_running_loop()
    monkeypatch.setattr(loop, "getaddrinfo", fake_getaddrinfo)
    with pytest.raises(ListenError, match=r"the host name 'relay\.invalid' does not resolve"):
        await try_bind(HostPort("relay.invalid", 50051))
