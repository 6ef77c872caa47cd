"""Where bunny sends jobs: ``NAME:PORT``, checked before anything is dialled.

A DNS name goes through bunny's resolver; an IP literal is dialled as it is
(handy for local runs), through :class:`LiteralAddress`, which answers like a
resolver that is never wrong and never expires.
"""

from __future__ import annotations

import ipaddress
import math
import re
from dataclasses import dataclass, field

from bunny.dns.model import Resolution
from bunnyrelay.settings import SettingError, parse_host_port

_LABEL = re.compile(r"^(?!-)[A-Za-z0-9_-]{1,63}(?<!-)$")


@dataclass(frozen=True, slots=True)
class LiteralAddress:
    """An IP literal target: resolves to itself, with no query and no span."""

    ip: str
    _answer: Resolution = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        answer = Resolution(
            name=self.ip,
            fqdn=self.ip,
            addresses=(self.ip,),
            ttl=0,
            source="literal",
            queries=(),
            expires_at=math.inf,
        )
        object.__setattr__(self, "_answer", answer)

    def __str__(self) -> str:
        return self.ip

    def cached(self, name: str) -> Resolution:
        """The one answer, made once (``name`` is the IP itself)."""
        return self._answer

    async def resolve(self, name: str, *, deadline: float | None = None) -> Resolution:
        return self.cached(name)

    async def close(self) -> None:
        return None


@dataclass(frozen=True, slots=True)
class Target:
    host: str | LiteralAddress
    port: int


def check_dns_name(name: str) -> str:
    """Return ``name`` if it is a valid DNS name, else raise SettingError saying why."""
    bare = name[:-1] if name.endswith(".") else name
    if not bare:
        raise SettingError("the name is empty")
    if len(bare) > 253:
        raise SettingError(f"{name[:40]}…: a DNS name is at most 253 characters")
    for label in bare.split("."):
        if not _LABEL.match(label):
            shown = label or "(empty)"
            raise SettingError(
                f"{name!r}: label {shown!r} is not valid (1-63 letters, digits, '-' or '_', "
                "not starting or ending with '-')"
            )
    return name


def parse_target(text: str) -> Target:
    """Parse ``NAME:PORT`` or ``IP:PORT`` (``[v6]:PORT``)."""
    hostport = parse_host_port(text)
    try:
        ip = ipaddress.ip_address(hostport.host)
    except ValueError:
        return Target(check_dns_name(hostport.host), hostport.port)
    return Target(LiteralAddress(str(ip)), hostport.port)
