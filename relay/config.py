"""relay's settings: one frozen, validated object, from flags and ``RELAY_*`` variables.

Every flag of ``relay serve`` has a ``RELAY_`` variable (``--max-in-flight`` is
``RELAY_MAX_IN_FLIGHT``); a flag on the command line wins. The standard
``OTEL_*`` variables configure telemetry (:mod:`bunnyrelay.telemetry`).
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path

from bunnyrelay.keepsettings import (
    MAX_AGE_DOC,
    MAX_WAITING_DOC,
    SLOWER_THAN_DOC,
    KeepSettings,
    parse_max_age,
    parse_slower_than,
)
from bunnyrelay.settings import (
    HostPort,
    SettingError,
    choice,
    non_negative_float,
    parse_host_port,
    positive_int,
    setting,
)
from relay.listening import check_host
from relay.stores.base import DURABLE_CACHE_MAX
from relay.stores.spec import DEFAULT_STORE, StoreSpec, parse_store, sqlite_path

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
        listen = HostPort(parse_host_port(stripped[:-2] + ":1").host, 0)
    else:
        listen = parse_host_port(stripped)
    try:
        check_host(listen.host)
    except SettingError as exc:
        raise SettingError(f"{text!r}: {exc}") from None
    return listen


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
    """Everything ``relay serve`` needs to know; checked when built.

    Each field's ``doc`` is its documentation and its flag's ``--help``:
    ``relay serve --help`` lists them all.
    """

    listen: HostPort = setting(
        default_factory=lambda: HostPort("0.0.0.0", 50051),
        doc="address to listen on; port 0 picks a free one (relay prints the one it got)",
        parse=parse_listen,
        metavar="HOST:PORT",
    )
    health_listen: HostPort | None = setting(
        None,
        doc="also serve grpc.health.v1, and only that, in plaintext here, with the same status "
        "as --listen (for probes that cannot speak TLS, such as the kubelet's); unset: no such "
        "port",
        parse=parse_listen,
        metavar="HOST:PORT",
    )
    max_payload_bytes: int = setting(
        1 * MiB,
        doc="largest job payload accepted; a larger one is refused with RESOURCE_EXHAUSTED",
        parse=positive_int,
        metavar="N",
    )
    max_in_flight: int = setting(
        256,
        doc="jobs running at once; more are refused with RESOURCE_EXHAUSTED and a pushback",
        parse=positive_int,
        metavar="N",
    )
    grace_period: float = setting(
        20.0,
        doc="seconds that jobs in flight get to finish after SIGTERM before they are cancelled",
        parse=non_negative_float,
        metavar="SECONDS",
    )
    instance_name: str = setting(
        default_factory=default_instance_name,
        doc="this relay's name in every result and span (relay_instance): $POD_NAME in "
        "Kubernetes, else $HOSTNAME or the host name",
        metavar="NAME",
    )
    dedupe_capacity: int = setting(
        100_000,
        doc="completed jobs remembered in memory for idempotent resubmission, least recently "
        f"used forgotten first: the whole memory store; a durable store keeps at most "
        f"{DURABLE_CACHE_MAX:,} of them in memory as a cache and remembers for "
        "--dedupe-retention",
        parse=positive_int,
        metavar="N",
    )
    store: StoreSpec = setting(
        DEFAULT_STORE,
        doc="idempotency store: memory, sqlite:PATH (relative to --state-dir) or "
        "redis://HOST:PORT/DB; docs/stores.md tells what each guarantees",
        parse=parse_store,
        metavar="STORE",
    )
    state_dir: Path = setting(
        default_factory=default_state_dir,
        doc="directory for state that must survive a restart (the SQLite store); must be "
        "writable, e.g. a mounted volume",
        parse=_path,
        metavar="DIR",
    )
    dedupe_retention: float = setting(
        24.0,
        doc="hours a durable store keeps a job id (SQLite prunes, Redis expires); "
        "resubmissions later than that run again",
        parse=_retention_hours,
        metavar="HOURS",
    )
    tls_cert: Path | None = setting(
        None,
        doc="serve TLS with this PEM certificate chain (re-read when the file changes); "
        "plaintext is then refused; needs --tls-key",
        parse=_path,
        metavar="PEM",
    )
    tls_key: Path | None = setting(
        None, doc="the PEM private key of --tls-cert", parse=_path, metavar="PEM"
    )
    tls_client_ca: Path | None = setting(
        None,
        doc="require client certificates signed by this PEM CA bundle (mutual TLS)",
        parse=_path,
        metavar="PEM",
    )
    log_format: str = setting(
        "text",
        doc="text for people, json for machines (one object per line)",
        parse=choice(*LOG_FORMATS),
        metavar="{text,json}",
    )
    log_level: str = setting(
        "INFO",
        doc="lowest level logged: DEBUG, INFO, WARNING or ERROR",
        parse=_log_level,
        metavar="{DEBUG,INFO,WARNING,ERROR}",
    )
    log_executions: bool = setting(
        False,
        doc="log one job.executed line at INFO for every job a handler ran, written before "
        "its result is stored (an audit of executions); otherwise at DEBUG",
        switch=True,
    )

    keep_slower_than: float = setting(
        1.0, doc=SLOWER_THAN_DOC, parse=parse_slower_than, metavar="SECONDS"
    )
    keep_max_waiting: int = setting(4096, doc=MAX_WAITING_DOC, parse=positive_int, metavar="N")
    keep_max_age: float = setting(300.0, doc=MAX_AGE_DOC, parse=parse_max_age, metavar="SECONDS")

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
        self.keep_settings()

    def keep_settings(self) -> KeepSettings:
        """Which unsampled traces relay exports anyway (:mod:`bunnyrelay.keeping`)."""
        return KeepSettings(self.keep_slower_than, self.keep_max_waiting, self.keep_max_age)

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
