"""relay's settings: one frozen, validated object, from flags and ``RELAY_*`` variables.

Every flag of ``relay serve`` has a ``RELAY_`` variable (``--max-in-flight`` is
``RELAY_MAX_IN_FLIGHT``); a flag on the command line wins. The standard
``OTEL_*`` variables configure telemetry (:mod:`bunnyrelay.telemetry`).
"""

from __future__ import annotations

import argparse
import os
import socket
from dataclasses import dataclass, field, fields

from bunnyrelay.settings import (
    EnvArgumentParser,
    HostPort,
    SettingError,
    choice,
    non_negative_float,
    parse_host_port,
    positive_int,
)

MiB = 1024 * 1024

MAX_PAYLOAD_LIMIT = 256 * MiB
"""The largest ``--max-payload-bytes``: gRPC and protobuf stop well before 2 GiB."""

LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def default_instance_name() -> str:
    """The pod name in Kubernetes (``POD_NAME`` from the downward API), else the host name."""
    return os.environ.get("POD_NAME") or os.environ.get("HOSTNAME") or socket.gethostname()


def parse_listen(text: str) -> HostPort:
    """``HOST:PORT`` to listen on; unlike a target, port 0 (any free port) is allowed."""
    stripped = text.strip()
    if stripped.endswith(":0"):
        # parse_host_port accepts ports 1-65535 only; check the rest with a stand-in port.
        host = parse_host_port(stripped[:-2] + ":1").host
        return HostPort(host, 0)
    return parse_host_port(stripped)


def _log_level(text: str) -> str:
    return choice(*LOG_LEVELS)(text.strip().upper())


@dataclass(frozen=True, slots=True)
class RelayConfig:
    """Everything ``relay serve`` needs to know; checked when built."""

    listen: HostPort = field(default_factory=lambda: HostPort("0.0.0.0", 50051))
    """Address to listen on; port 0 picks a free port (relay prints the one it got)."""

    max_payload_bytes: int = 1 * MiB
    """Largest job payload accepted; a larger one is refused with RESOURCE_EXHAUSTED."""

    max_in_flight: int = 256
    """Jobs running at once; more are refused with RESOURCE_EXHAUSTED and a pushback."""

    grace_period: float = 20.0
    """Seconds that jobs in flight get to finish after SIGTERM before they are cancelled."""

    instance_name: str = field(default_factory=default_instance_name)
    """This relay's name in every result and span (``relay_instance``)."""

    dedupe_capacity: int = 100_000
    """Completed jobs remembered for idempotent resubmission (least recently used go first)."""

    log_format: str = "text"
    """``text`` for people, ``json`` for machines (one object per line)."""

    log_level: str = "INFO"
    """Lowest level logged: DEBUG, INFO, WARNING or ERROR."""

    def __post_init__(self) -> None:
        if not 0 <= self.listen.port <= 65535:
            raise SettingError(f"listen: port {self.listen.port} is not in 0-65535")
        if not 1 <= self.max_payload_bytes <= MAX_PAYLOAD_LIMIT:
            raise SettingError(
                f"max_payload_bytes: {self.max_payload_bytes} is not in 1-{MAX_PAYLOAD_LIMIT}"
            )
        if not 1 <= self.max_in_flight <= 100_000:
            raise SettingError(f"max_in_flight: {self.max_in_flight} is not in 1-100000")
        if not 0 <= self.grace_period <= 3600:
            raise SettingError(f"grace_period: {self.grace_period} s is not in 0-3600")
        if not self.instance_name.strip() or len(self.instance_name) > 253:
            raise SettingError("instance_name: must be 1-253 characters")
        if self.dedupe_capacity < 1:
            raise SettingError(f"dedupe_capacity: {self.dedupe_capacity} must be at least 1")
        if self.log_format not in LOG_FORMATS:
            raise SettingError(f"log_format: {self.log_format!r} is not one of text, json")
        if self.log_level not in LOG_LEVELS:
            raise SettingError(f"log_level: {self.log_level!r} is not one of {LOG_LEVELS}")

    @property
    def max_receive_message_bytes(self) -> int:
        """gRPC's own limit, set above ours so that relay's check, with its clear message,
        is what a payload up to twice the limit meets; past that gRPC refuses it itself,
        also with RESOURCE_EXHAUSTED, before relay would hold it in memory."""
        return 2 * self.max_payload_bytes + 64 * 1024

    @classmethod
    def add_options(cls, parser: EnvArgumentParser) -> None:
        """Declare ``relay serve``'s flags (each also ``RELAY_<FLAG>``)."""
        defaults = cls()
        parser.option(
            "--listen",
            parse=parse_listen,
            default=defaults.listen,
            metavar="HOST:PORT",
            help="address to listen on; port 0 picks a free one",
        )
        parser.option(
            "--max-payload-bytes",
            parse=positive_int,
            default=defaults.max_payload_bytes,
            metavar="N",
            help="largest job payload accepted",
        )
        parser.option(
            "--max-in-flight",
            parse=positive_int,
            default=defaults.max_in_flight,
            metavar="N",
            help="jobs running at once before RESOURCE_EXHAUSTED",
        )
        parser.option(
            "--grace-period",
            parse=non_negative_float,
            default=defaults.grace_period,
            metavar="SECONDS",
            help="time in-flight jobs get to finish after SIGTERM",
        )
        parser.option(
            "--instance-name",
            default=defaults.instance_name,
            metavar="NAME",
            help="name reported in results and spans (default: $POD_NAME, $HOSTNAME or host name)",
        )
        parser.option(
            "--dedupe-capacity",
            parse=positive_int,
            default=defaults.dedupe_capacity,
            metavar="N",
            help="completed jobs remembered for idempotent resubmission",
        )
        parser.option(
            "--log-format",
            parse=choice(*LOG_FORMATS),
            default=defaults.log_format,
            help="text or json",
        )
        parser.option(
            "--log-level",
            parse=_log_level,
            default=defaults.log_level,
            help="DEBUG, INFO, WARNING or ERROR",
        )

    @classmethod
    def from_namespace(cls, args: argparse.Namespace) -> RelayConfig:
        """Build from parsed flags; raises SettingError naming the flag that is wrong."""
        values = {f.name: getattr(args, f.name) for f in fields(cls)}
        try:
            return cls(**values)
        except SettingError as exc:
            name, _, problem = str(exc).partition(": ")
            flag = "--" + name.replace("_", "-")
            env = "RELAY_" + name.upper()
            raise SettingError(f"{flag} (or {env}): {problem}") from None
