"""How bunny's connections to relay notice a dead path and come back: HTTP/2 pings and a
prompt reconnect.

The path crosses NAT and VPN gateways that forget idle connections, and a tunnel that
goes silent sends no RST. relay accepts pings as often as twice a second
(:mod:`relay.server`), and bunny pings at most once a second. A channel that lost relay
tries again at most ``RECONNECT_BACKOFF_MAX_S`` apart, not gRPC's default two minutes.
"""

from __future__ import annotations

from dataclasses import dataclass

RECONNECT_BACKOFF_MAX_S = 1.0
"""The longest a channel waits between attempts to reconnect (gRPC's default: 120 s,
which would leave bunny failing jobs fast for up to two minutes after relay is back).
With bunny's own retries at most a second apart, a relay that restarts is found
within about a second of being back."""


@dataclass(frozen=True, slots=True)
class Keepalive:
    """HTTP/2 pings on each channel to relay; ``interval_s`` 0 turns them off."""

    interval_s: float = 30.0
    """A ping after this long, calls in flight or not: well under the idle timeouts of
    cloud NAT and VPN gateways (about 4 minutes and up)."""
    timeout_s: float = 10.0
    """No answer to a ping within this long: the connection is dead; its calls fail
    UNAVAILABLE (and are retried) and the channel reconnects."""

    def __post_init__(self) -> None:
        if self.interval_s < 0 or self.timeout_s <= 0:
            raise ValueError(
                f"keepalive: the interval must be 0 (off) or more and the timeout more than "
                f"0 seconds; got {self.interval_s} and {self.timeout_s}"
            )
        if 0 < self.interval_s < 1:
            # relay answers a client that pings too often with GOAWAY "too_many_pings";
            # a margin under its limit (twice a second) keeps timer jitter from tripping it.
            raise ValueError(
                f"keepalive: the interval must be 0 (off) or at least 1 s; got {self.interval_s} s"
            )

    def channel_options(self) -> list[tuple[str, object]]:
        options: list[tuple[str, object]] = [
            ("grpc.max_reconnect_backoff_ms", int(RECONNECT_BACKOFF_MAX_S * 1000))
        ]
        if self.interval_s:
            options += [
                ("grpc.keepalive_time_ms", int(self.interval_s * 1000)),
                ("grpc.keepalive_timeout_ms", int(self.timeout_s * 1000)),
                # grpcio 1.85's transport times an unanswered ping out after this one
                # (default 60 s), whatever the keepalive timeout says.
                ("grpc.http2.ping_timeout_ms", int(self.timeout_s * 1000)),
                ("grpc.keepalive_permit_without_calls", 1),
                # A long job sends no data for a while: keep pinging through it.
                ("grpc.http2.max_pings_without_data", 0),
            ]
        return options
