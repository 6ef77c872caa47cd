"""The address relay listens on: checked as text when the flag is read, and tried before gRPC binds.

gRPC's own failure to bind says only that it failed, after a log line of its C
core on stderr. So relay looks first: a host that cannot be an address at all
is a bad flag (:func:`check_host`, exit 2), and an address it is about to bind
is resolved and bound once by itself (:func:`try_bind`), so that a name that
does not resolve, an address of another machine, a port in use or a port
that needs privileges each get their own clear message, and gRPC is asked
only for what it can have.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import re
import socket
from pathlib import Path

from bunnyrelay.settings import HostPort, SettingError
from relay.errors import ListenError

_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")


def check_host(host: str) -> None:
    """Raise :class:`SettingError` unless ``host`` is an IP address or a host name."""
    if ":" in host:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise SettingError(f"{host} is not a valid IPv6 address") from None
        return
    if all(c.isdigit() or c == "." for c in host):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise SettingError(
                f"{host} is not a valid IPv4 address: four numbers from 0 to 255, e.g. 0.0.0.0"
            ) from None
        return
    name = host.removesuffix(".")
    if len(name) > 253 or not all(_LABEL.fullmatch(label) for label in name.split(".")):
        raise SettingError(f"{host!r} is not an IP address or a host name")


UNPRIVILEGED_PORT_START = Path("/proc/sys/net/ipv4/ip_unprivileged_port_start")


def first_unprivileged_port() -> int:
    """The lowest port any user may bind (Linux's sysctl; 1024 where it cannot be read)."""
    try:
        return int(UNPRIVILEGED_PORT_START.read_text())
    except (OSError, ValueError):
        return 1024


def _bind_problem(exc: OSError) -> str:
    if exc.errno == errno.EADDRINUSE:
        return "the port is in use by another process"
    if exc.errno == errno.EADDRNOTAVAIL:
        return "it is not an address of this machine (use 0.0.0.0 for every address)"
    if exc.errno == errno.EACCES:
        return (
            f"ports below {first_unprivileged_port()} need root or the CAP_NET_BIND_SERVICE "
            "capability; pick a higher port"
        )
    if exc.errno == errno.EINVAL:
        return (
            "the address is invalid here (a link-local IPv6 address needs its interface, "
            "e.g. [fe80::1%eth0])"
        )
    return exc.strerror or str(exc)


async def try_bind(listen: HostPort) -> None:
    """Resolve ``listen`` and bind it once, as gRPC will; raise :class:`ListenError` saying
    why not when no address it names can be bound (gRPC is satisfied with one)."""
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(
            listen.host, listen.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        raise ListenError(
            f"cannot listen on {listen}: the host name {listen.host!r} does not resolve "
            f"({exc.strerror}); give an address of this machine, e.g. 0.0.0.0:{listen.port}"
        ) from None
    problems: list[str] = []
    for family, kind, proto, _, address in infos:
        try:
            with socket.socket(family, kind, proto) as probe:
                # As gRPC's listeners do: a port left in TIME_WAIT is free to take.
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                probe.bind(address)
            return
        except OSError as exc:
            problems.append(_bind_problem(exc))
    reasons = "; ".join(dict.fromkeys(problems)) or "it resolves to no address"
    raise ListenError(f"cannot listen on {listen}: {reasons}")
