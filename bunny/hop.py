"""A DNS hop of the path to relay, as ``bunny diagnose --hop LABEL=IP[:PORT]`` names it."""

from __future__ import annotations

from dataclasses import dataclass

from bunnyrelay.settings import HostPort, SettingError, parse_ip_port


@dataclass(frozen=True, slots=True)
class Hop:
    label: str
    server: HostPort


def parse_hop(text: str) -> Hop:
    """``LABEL=IP[:PORT]``, e.g. ``cluster-dns=10.0.0.10``."""
    label, sep, server = text.partition("=")
    if not sep or not label.strip():
        raise SettingError(f"{text!r}: a hop is LABEL=IP[:PORT], e.g. cluster-dns=10.0.0.10")
    return Hop(label.strip(), parse_ip_port(server, default_port=53))
