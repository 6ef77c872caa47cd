"""The hosts file, read before DNS as glibc does with ``hosts: files dns``.

A name in the hosts file is answered from it and DNS is not asked: that is how
``localhost`` resolves, and how Kubernetes ``hostAliases`` (entries the kubelet
writes into a pod's /etc/hosts) route around a DNS path that is broken.

Read as glibc's nss_files reads it (hosts(5)): ``ADDRESS NAME [ALIAS…]`` per
line, ``#`` to the end of a line is a comment, names match case-insensitively
and as asked (no search list, and ``localhost.`` is not ``localhost``). A name
with addresses of another family than the one asked for falls through to DNS.
Every address of a name is kept, in file order (IPv4 before IPv6).

The file is checked for a change at most once a second, by its identity
(``stat``), and read again only when it changed; a change that cannot be read
keeps the table bunny has and is logged. At start, a file bunny cannot use is an
error naming it and saying what to do.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from bunny.dns.model import Resolution
from bunny.dns.textfile import read_text_file
from bunnyrelay.settings import SettingError

log = logging.getLogger("bunny.resolver")

DEFAULT_PATH = "/etc/hosts"
CHECK_INTERVAL_S = 1.0
"""How often, at most, bunny looks at the file's identity."""
# A lookup of a name not in the file is remembered too; this bounds the memo.
_MAX_REMEMBERED = 1024

Table = dict[str, tuple[str, ...]]
"""Lower-case name to its addresses, in file order."""

_Identity = tuple[int, int, int, int]

_WHAT_TO_DO = "or give --hosts-file none to read no hosts file"


def parse_hosts(text: str, *, path: str = "<hosts>") -> Table:
    """The names and addresses in hosts-file ``text``; ``path`` names it in errors.

    An address that is not an IP address is an error naming the line (glibc skips
    such a line; bunny says so rather than quietly answer less than was meant).
    """
    table: dict[str, list[str]] = {}
    for lineno, raw in enumerate(text.splitlines(), start=1):
        words = raw.split("#", 1)[0].split()
        if not words:
            continue
        where = f"{path}:{lineno}"
        try:
            address = ipaddress.ip_address(words[0].split("%", 1)[0])
        except ValueError:
            raise SettingError(
                f"{where}: {words[0][:60]!r} is not an IP address; a hosts line is "
                f"ADDRESS NAME [ALIAS…]: fix the line, {_WHAT_TO_DO}"
            ) from None
        if len(words) < 2:
            raise SettingError(f"{where}: {words[0]} has no name; fix the line, {_WHAT_TO_DO}")
        for name in words[1:]:
            known = table.setdefault(name.lower(), [])
            if str(address) not in known:
                known.append(str(address))
    return {name: _ipv4_first(addresses) for name, addresses in table.items()}


def _ipv4_first(addresses: Sequence[str]) -> tuple[str, ...]:
    return tuple(sorted(addresses, key=lambda text: ":" in text))


def read_hosts(path: str | Path) -> Table:
    """Read and parse the hosts file at ``path``; SettingError says what is wrong and what to do."""
    text = read_text_file(
        path, what="the hosts file", flag="--hosts-file", env="BUNNY_HOSTS_FILE", fix=_WHAT_TO_DO
    )
    return parse_hosts(text, path=str(path))


def _identity(path: str) -> _Identity:
    stat = os.stat(path)
    return (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)


class HostsFile:
    """The answers of one hosts file for one family, kept in step with the file."""

    def __init__(
        self,
        path: str | Path,
        qtypes: Sequence[str],
        *,
        clock: Callable[[], float] = time.monotonic,
        check_interval: float = CHECK_INTERVAL_S,
    ) -> None:
        """Reads the file now: SettingError when it cannot be used. ``qtypes`` are the
        record types asked (``A``, ``AAAA``): only addresses of those families answer."""
        self.path = str(path)
        self._v4 = "A" in qtypes
        self._v6 = "AAAA" in qtypes
        self._clock = clock
        self._check_interval = check_interval
        try:
            seen = _identity(self.path)
        except OSError:
            seen = (0, 0, 0, 0)  # read_hosts below says why
        self._table = read_hosts(self.path)
        self._seen = seen
        self.answers: dict[str, Resolution | None] = {}
        """The answer (or None) for each name asked so far; emptied in place when the
        file changes."""
        self.next_look = self._clock() + check_interval
        """When :meth:`look` is due."""

    @property
    def table(self) -> Mapping[str, tuple[str, ...]]:
        return self._table

    def answer(self, name: str, now: float) -> Resolution | None:
        """The hosts file's answer for ``name`` as asked, or None: ask DNS.

        ``now`` is the clock's time (the resolver's own), to know when to look at the
        file again. The resolver's fast path does the same inline.
        """
        if now >= self.next_look:
            self.look(now)
        try:
            return self.answers[name]
        except KeyError:
            return self.remember(name)

    def remember(self, name: str) -> Resolution | None:
        """Work out the answer for ``name`` and keep it in :attr:`answers`."""
        addresses = [
            address
            for address in self._table.get(name.lower(), ())
            if (self._v6 if ":" in address else self._v4)
        ]
        answer = None
        if addresses:
            answer = Resolution(
                name=name,
                fqdn=name.lower(),
                addresses=tuple(addresses),
                ttl=0,
                source="hosts",
                queries=(),
                expires_at=math.inf,
            )
        if len(self.answers) >= _MAX_REMEMBERED:
            self.answers.clear()
        self.answers[name] = answer
        return answer

    def look(self, now: float) -> None:
        """Look at the file's identity; read it again if it changed."""
        self.next_look = now + self._check_interval
        try:
            identity = _identity(self.path)
        except OSError:
            identity = (0, 0, 0, 0)
        if identity == self._seen:
            return
        self._seen = identity
        try:
            table = read_hosts(self.path)
        except SettingError as exc:
            log.warning(
                "the hosts file changed but cannot be used, keeping what was read before: %s",
                exc,
                extra={"event": "dns.hosts_reload_failed", "path": self.path},
            )
            return
        self._table = table
        self.answers.clear()
        log.info(
            "hosts file %s read again: %d names",
            self.path,
            len(table),
            extra={"event": "dns.hosts_reloaded", "path": self.path},
        )
