"""A question a DNS server answers itself, as ``bunny diagnose --alive-query`` names it
(:mod:`bunny.dns.liveness` asks it)."""

from __future__ import annotations

from dataclasses import dataclass

from bunnyrelay.settings import SettingError

_TYPES = ("A", "AAAA", "NS", "SOA", "TXT", "MX", "SRV", "PTR", "CNAME", "CAA", "NAPTR")
_CLASSES = {"IN": "IN", "CH": "CHAOS", "CHAOS": "CHAOS"}


@dataclass(frozen=True, slots=True)
class AliveQuery:
    """A question a DNS server should answer without asking its upstream."""

    name: str
    qtype: str = "SOA"
    qclass: str = "IN"

    def __str__(self) -> str:
        shown_class = "" if self.qclass == "IN" else " CH"
        return f"{self.name}{shown_class} {self.qtype}"


DEFAULT_QUERIES = (AliveQuery(".", "NS"), AliveQuery("version.bind", "TXT", "CHAOS"))


def parse_alive_query(text: str) -> AliveQuery:
    """``NAME[/TYPE[/CLASS]]``, e.g. ``cluster.local`` (its SOA) or ``version.bind/TXT/CH``."""
    name, *rest = text.strip().split("/")
    if len(rest) > 2:
        raise SettingError(f"{text!r}: expected NAME[/TYPE[/CLASS]], e.g. cluster.local/SOA")
    if name != ".":
        # Imported here: the flag's parser is built for `bunny --help`, which must not load
        # gRPC (bunny.errors imports it); only a given --alive-query pays for it.
        from bunny.dns.names import check_name
        from bunny.errors import InvalidName

        try:
            check_name(name)
        except InvalidName as invalid:
            raise SettingError(f"{text!r}: {invalid}") from None
    qtype = rest[0].upper() if rest else "SOA"
    if qtype not in _TYPES:
        raise SettingError(f"{text!r}: the type must be one of {', '.join(_TYPES)}")
    qclass = _CLASSES.get(rest[1].upper()) if len(rest) == 2 else "IN"
    if qclass is None:
        raise SettingError(f"{text!r}: the class must be IN or CH")
    return AliveQuery(name, qtype, qclass)
