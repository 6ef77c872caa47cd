"""How bunny resolves: one frozen, checked object, from flags, a resolv.conf and a hosts file."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bunny.dns import resolvconf
from bunny.dns.model import FAMILIES
from bunnyrelay.settings import HostPort, SettingError


@dataclass(frozen=True, slots=True)
class ResolverSettings:
    """How bunny resolves names. Build it with :meth:`from_sources` from flags and resolv.conf."""

    nameservers: tuple[HostPort, ...]
    """Nameservers to ask, in order; retries rotate through them."""
    search: tuple[str, ...] = ()
    """Search domains, applied by bunny (not c-ares) so each candidate is its own query."""
    ndots: int = 1
    """A name with at least this many dots is tried as given before the search list."""
    timeout: float = 2.0
    """Seconds to wait for one attempt of one query. An upper bound: c-ares 1.34 shortens it
    to 5x the nameserver's recent average latency (at least 0.25 s) and caps it at 5 s."""
    attempts: int = 2
    """Attempts per query (per candidate FQDN and type), across the nameservers in turn."""
    family: str = "any"
    """``ipv4`` (A only), ``ipv6`` (AAAA only) or ``any`` (A and AAAA in parallel)."""
    stale_max: float = 300.0
    """RFC 8767: how long past expiry a last-good answer may be served when a refresh fails."""
    stale_ttl: int = 30
    """TTL reported for a stale answer (RFC 8767 suggests 30 s)."""
    negative_ttl: float = 5.0
    """RFC 2308 negative caching of NXDOMAIN/NODATA, kept short so a new record shows up soon."""
    max_ttl: int = 3600
    """Answers are cached for at most this many seconds, whatever their TTL says."""
    stale_recheck: float = 5.0
    """While serving stale, wait this long after a failed refresh before trying again."""
    hosts_file: str | None = None
    """A hosts file to answer from before DNS (glibc's ``files dns``); None: none."""

    def __post_init__(self) -> None:
        if not self.nameservers:
            raise SettingError(
                "no nameserver to ask: give --nameserver or a resolv.conf with a nameserver line"
            )
        if self.family not in FAMILIES:
            raise SettingError(f"family {self.family!r} is not one of: {', '.join(FAMILIES)}")
        if not 0 <= self.ndots <= resolvconf.MAX_NDOTS:
            raise SettingError(f"ndots must be from 0 to {resolvconf.MAX_NDOTS}, not {self.ndots}")
        if not (self.timeout > 0 and math.isfinite(self.timeout)):
            raise SettingError(f"the DNS timeout must be more than 0 seconds, not {self.timeout}")
        if self.attempts < 1:
            raise SettingError(f"DNS attempts must be at least 1, not {self.attempts}")
        for name in ("stale_max", "stale_ttl", "negative_ttl", "max_ttl", "stale_recheck"):
            value = getattr(self, name)
            if not (value >= 0 and math.isfinite(value)):
                raise SettingError(f"{name} must be a finite number of at least 0, not {value}")

    @classmethod
    def from_sources(
        cls,
        *,
        resolv_conf: str | None,
        nameservers: Sequence[HostPort],
        ndots: int | None,
        hosts_file: str | None = None,
        **overrides: Any,
    ) -> ResolverSettings:
        """Settings from flags and a resolv.conf; flags win.

        With ``--nameserver`` and no ``--resolv-conf`` no resolv.conf is read at all
        (no search list, ndots 1), so a lab run never picks up the host's search
        domains. With neither, /etc/resolv.conf is read. ``hosts_file`` is read
        before DNS either way (None: no hosts file). ``overrides`` set any other
        field; ``None`` values are ignored, so unset flags can be passed as is.
        """
        given = {key: value for key, value in overrides.items() if value is not None}
        conf: resolvconf.ResolvConf | None = None
        if resolv_conf is not None or not nameservers:
            conf = resolvconf.read_resolv_conf(resolv_conf or resolvconf.DEFAULT_PATH)
        values: dict[str, Any] = {"hosts_file": hosts_file}
        if conf is not None:
            values.update(
                nameservers=conf.nameservers,
                search=conf.search,
                ndots=conf.ndots,
                timeout=conf.timeout,
                attempts=conf.attempts,
            )
        if nameservers:
            values["nameservers"] = tuple(nameservers)
        if ndots is not None:
            values["ndots"] = ndots
        values.update(given)
        if not values.get("nameservers"):
            where = resolv_conf or resolvconf.DEFAULT_PATH
            raise SettingError(f"{where}: no nameserver line, and no --nameserver given")
        return cls(**values)
