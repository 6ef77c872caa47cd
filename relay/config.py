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
from pathlib import Path

from bunnyrelay.settings import (
    EnvArgumentParser,
    HostPort,
    SettingError,
    choice,
    non_negative_float,
    parse_host_port,
    positive_int,
)
from relay.stores import DEFAULT_STORE, StoreSpec, parse_store, sqlite_path

MiB = 1024 * 1024

MAX_PAYLOAD_LIMIT = 256 * MiB
"""The largest ``--max-payload-bytes``: gRPC and protobuf stop well before 2 GiB."""

LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def default_instance_name() -> str:
    """The pod name in Kubernetes (``POD_NAME`` from the downward API), else the host name."""
    return os.environ.get("POD_NAME") or os.environ.get("HOSTNAME") or socket.gethostname()


def default_state_dir() -> Path:
    """Where relay keeps what must survive a restart (the SQLite store), unless told.

    ``$STATE_DIRECTORY`` when systemd gives one; else ``/var/lib/relay`` when it
    exists or relay runs as root (the container image creates it for its
    non-root user, and the chart mounts a volume there); else
    ``$XDG_STATE_HOME/relay`` (``~/.local/state/relay``), for a developer's own runs.
    """
    systemd = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
    if systemd:
        return Path(systemd)
    system = Path("/var/lib/relay")
    if system.is_dir() or os.geteuid() == 0:
        return system
    xdg = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(xdg) / "relay"


def _path(text: str) -> Path:
    if not text.strip():
        raise SettingError("expected a path, got an empty value")
    return Path(text.strip()).expanduser()


def _retention_hours(text: str) -> float:
    value = non_negative_float(text)
    if value <= 0:
        raise SettingError(f"{text!r}: the retention must be more than 0 hours")
    return value


def parse_listen(text: str) -> HostPort:
    """``HOST:PORT`` to listen on; unlike a target, port 0 (any free port) is allowed."""
    stripped = text.strip()
    if stripped.endswith(":0"):
        # parse_host_port accepts ports 1-65535 only; check the rest with a stand-in port.
        host = parse_host_port(stripped[:-2] + ":1").host
        return HostPort(host, 0)
    return parse_host_port(stripped)


def _check_health_listen(health: HostPort, listen: HostPort) -> None:
    if not 0 <= health.port <= 65535:
        raise SettingError(f"health_listen: port {health.port} is not in 0-65535")
    wildcards = {"0.0.0.0", "::"}
    overlaps = health.host == listen.host or {health.host, listen.host} & wildcards
    if health.port == listen.port != 0 and overlaps:
        raise SettingError(f"health_listen: {health} overlaps --listen {listen}; pick another port")


def _log_level(text: str) -> str:
    return choice(*LOG_LEVELS)(text.strip().upper())


@dataclass(frozen=True, slots=True)
class RelayConfig:
    """Everything ``relay serve`` needs to know; checked when built."""

    listen: HostPort = field(default_factory=lambda: HostPort("0.0.0.0", 50051))
    """Address to listen on; port 0 picks a free port (relay prints the one it got)."""

    health_listen: HostPort | None = None
    """A second, plaintext address that serves grpc.health.v1 and nothing else (same status
    as ``listen``), for the kubelet's native gRPC probes, which cannot speak TLS; None: none."""

    max_payload_bytes: int = 1 * MiB
    """Largest job payload accepted; a larger one is refused with RESOURCE_EXHAUSTED."""

    max_in_flight: int = 256
    """Jobs running at once; more are refused with RESOURCE_EXHAUSTED and a pushback."""

    grace_period: float = 20.0
    """Seconds that jobs in flight get to finish after SIGTERM before they are cancelled."""

    instance_name: str = field(default_factory=default_instance_name)
    """This relay's name in every result and span (``relay_instance``)."""

    dedupe_capacity: int = 100_000
    """Completed jobs remembered in memory for idempotent resubmission (least recently used go
    first): the whole memory store. The durable stores remember for ``dedupe_retention`` and
    keep at most :data:`relay.stores.base.DURABLE_CACHE_MAX` of these in memory as a cache."""

    store: StoreSpec = DEFAULT_STORE
    """The idempotency store: ``memory``, ``sqlite:PATH`` (relative to ``state_dir``) or
    ``redis://HOST:PORT/DB``; :mod:`relay.stores` tells what each one guarantees."""

    state_dir: Path = field(default_factory=default_state_dir)
    """Directory for state that must survive a restart (the default SQLite store)."""

    dedupe_retention: float = 24.0
    """Hours a durable store keeps a job id (SQLite prunes, Redis expires); resubmissions
    later than that run again."""

    tls_cert: Path | None = None
    """PEM certificate chain relay presents; with ``tls_key``, relay serves TLS only."""

    tls_key: Path | None = None
    """PEM private key of ``tls_cert``."""

    tls_client_ca: Path | None = None
    """PEM CA bundle: when set, clients must present a certificate signed by it (mutual TLS)."""

    log_format: str = "text"
    """``text`` for people, ``json`` for machines (one object per line)."""

    log_level: str = "INFO"
    """Lowest level logged: DEBUG, INFO, WARNING or ERROR."""

    def __post_init__(self) -> None:
        if not 0 <= self.listen.port <= 65535:
            raise SettingError(f"listen: port {self.listen.port} is not in 0-65535")
        if self.health_listen is not None:
            _check_health_listen(self.health_listen, self.listen)
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
        if not 0 < self.dedupe_retention <= 24 * 365:
            raise SettingError(
                f"dedupe_retention: {self.dedupe_retention} hours is not in (0, {24 * 365}]"
            )
        if (self.tls_cert is None) != (self.tls_key is None):
            raise SettingError("tls_cert: --tls-cert and --tls-key must be given together")
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise SettingError(
                "tls_client_ca: requiring client certificates needs --tls-cert and --tls-key"
            )
        if self.log_format not in LOG_FORMATS:
            raise SettingError(f"log_format: {self.log_format!r} is not one of text, json")
        if self.log_level not in LOG_LEVELS:
            raise SettingError(f"log_level: {self.log_level!r} is not one of {LOG_LEVELS}")

    @property
    def tls(self) -> bool:
        """True when relay serves TLS (and refuses plaintext)."""
        return self.tls_cert is not None

    @property
    def store_path(self) -> Path | None:
        """The SQLite store's file, for a ``sqlite:`` store."""
        if self.store.scheme != "sqlite":
            return None
        return sqlite_path(self.store, self.state_dir)

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
            "--health-listen",
            parse=parse_listen,
            metavar="HOST:PORT",
            help="also serve grpc.health.v1, and only that, in plaintext here (for probes that "
            "cannot speak TLS, such as the kubelet's); default: no such port",
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
            "--store",
            parse=parse_store,
            default=defaults.store,
            metavar="STORE",
            help="idempotency store: memory, sqlite:PATH (relative to --state-dir) or "
            "redis://HOST:PORT/DB; docs/stores.md tells what each guarantees",
        )
        parser.option(
            "--state-dir",
            parse=_path,
            default=defaults.state_dir,
            metavar="DIR",
            help="directory for state that survives a restart (the SQLite store); "
            "must be writable, e.g. a mounted volume",
        )
        parser.option(
            "--dedupe-retention",
            parse=_retention_hours,
            default=defaults.dedupe_retention,
            metavar="HOURS",
            help="how long a durable store remembers a job id",
        )
        parser.option(
            "--tls-cert",
            parse=_path,
            metavar="PEM",
            help="serve TLS with this certificate chain (re-read when the file changes); "
            "plaintext is then refused",
        )
        parser.option("--tls-key", parse=_path, metavar="PEM", help="the private key of --tls-cert")
        parser.option(
            "--tls-client-ca",
            parse=_path,
            metavar="PEM",
            help="require client certificates signed by this CA bundle (mutual TLS)",
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
