"""Read a resolv.conf the way glibc does, so bunny applies the same search list and ndots.

What is read (resolv.conf(5)):

- ``nameserver IP`` - at most three, the rest ignored like glibc's MAXNS.
  As an extension of ours a port may follow (``IP:PORT``, ``[v6]:PORT``); the
  default is 53. The tests and the local lab use it to point at a DNS server on
  a high port.
- ``search D1 D2 …`` and ``domain D``: whichever comes last wins.
- ``options ndots:N timeout:N attempts:N``, capped as glibc caps them
  (15, 30 and 5); other options are ignored.
- Lines starting with ``#`` or ``;`` are comments, and so is the rest of a line
  after one. Unknown keywords are ignored.

Anything bunny cannot use raises SettingError naming the file, the line and what is wrong.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from bunny.dns.textfile import read_text_file
from bunnyrelay.settings import HostPort, SettingError, parse_ip_port

DEFAULT_PATH = "/etc/resolv.conf"
DEFAULT_PORT = 53

# glibc's limits: MAXNS, RES_MAXNDOTS, RES_MAXRETRANS (seconds) and RES_MAXRETRY.
MAX_NAMESERVERS = 3
MAX_NDOTS = 15
MAX_TIMEOUT = 30
MAX_ATTEMPTS = 5

_COMMENT = re.compile(r"[#;].*")
_WAY_OUT = "or give --nameserver IP to read no resolv.conf"


@dataclass(frozen=True, slots=True)
class ResolvConf:
    """What bunny uses from a resolv.conf."""

    nameservers: tuple[HostPort, ...]
    """In the order listed, at most three."""
    search: tuple[str, ...]
    """Search domains without trailing dots, in the order listed."""
    ndots: int = 1
    """A name with at least this many dots is tried as given before the search list."""
    timeout: float = 5.0
    """Seconds to wait for one answer."""
    attempts: int = 2
    """How many times each query is sent before giving up."""


def read_resolv_conf(path: str | Path = DEFAULT_PATH) -> ResolvConf:
    """Read and parse the file at ``path``; SettingError says what is wrong and what to do."""
    text = read_text_file(
        path, what="resolv.conf", flag="--resolv-conf", env="BUNNY_RESOLV_CONF", fix=_WAY_OUT
    )
    try:
        return parse_resolv_conf(text, path=str(path))
    except SettingError as exc:
        raise SettingError(f"{exc}; fix the file, {_WAY_OUT}") from None


def parse_resolv_conf(text: str, *, path: str = "<resolv.conf>") -> ResolvConf:
    """Parse resolv.conf ``text``; ``path`` only names the source in error messages."""
    nameservers: list[HostPort] = []
    search: tuple[str, ...] = ()
    ndots, timeout, attempts = 1, 5, 2
    for lineno, raw in enumerate(text.splitlines(), start=1):
        words = _COMMENT.sub("", raw).split()
        if not words:
            continue
        keyword, args = words[0], words[1:]
        where = f"{path}:{lineno}"
        if keyword == "nameserver":
            if not args:
                raise SettingError(f"{where}: 'nameserver' needs an IP address")
            try:
                server = parse_ip_port(args[0], default_port=DEFAULT_PORT)
            except SettingError as exc:
                raise SettingError(f"{where}: nameserver {args[0]!r}: {exc}") from None
            if len(nameservers) < MAX_NAMESERVERS:
                nameservers.append(server)
        elif keyword in ("search", "domain"):
            if not args:
                raise SettingError(f"{where}: {keyword!r} needs at least one domain")
            # "search ." is how a file says "no search list".
            search = tuple(d.rstrip(".").lower() for d in args if d.rstrip("."))
        elif keyword == "options":
            for option in args:
                name, _, value = option.partition(":")
                if name == "ndots":
                    ndots = min(_whole(value, f"{where}: options {option}", minimum=0), MAX_NDOTS)
                elif name == "timeout":
                    timeout = min(_whole(value, f"{where}: options {option}"), MAX_TIMEOUT)
                elif name == "attempts":
                    attempts = min(_whole(value, f"{where}: options {option}"), MAX_ATTEMPTS)
    return ResolvConf(
        nameservers=tuple(nameservers),
        search=search,
        ndots=ndots,
        timeout=float(timeout),
        attempts=attempts,
    )


def _whole(value: str, where: str, *, minimum: int = 1) -> int:
    if not value.isdigit() or not value.isascii():
        raise SettingError(f"{where}: {value!r} is not a whole number")
    number = int(value)
    if number < minimum:
        raise SettingError(f"{where}: must be at least {minimum}")
    return number
