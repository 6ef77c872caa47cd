"""bunny's settings: one frozen, validated object, from flags and ``BUNNY_*`` variables.

Every flag of a ``bunny`` command has a ``BUNNY_`` variable (``--hosts-file`` is
``BUNNY_HOSTS_FILE``; a repeated flag takes commas, ``BUNNY_NAMESERVER=IP,IP``); a
flag on the command line wins. Each field of :class:`BunnyConfig` is documented
once, and that text is its flag's ``--help``; which command has which flag is
:mod:`bunny.cli`'s table. The standard ``OTEL_*`` variables configure telemetry
(:mod:`bunnyrelay.telemetry`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from bunny.dns.alivequery import AliveQuery, parse_alive_query
from bunny.dns.hosts import DEFAULT_PATH as DEFAULT_HOSTS_FILE
from bunny.dns.resolvconf import MAX_NDOTS
from bunny.dns.settings import ResolverSettings
from bunny.hop import Hop, parse_hop
from bunny.keepalive import Keepalive
from bunny.payload import DEFAULT_MAX_BYTES, LARGEST_MAX_BYTES, read_payload, too_large
from bunny.targets import Target, parse_target
from bunnyrelay.settings import (
    HostPort,
    SettingError,
    choice,
    non_negative_float,
    parse_ip_port,
    positive_int,
    setting,
)

# ``--help`` builds its parser from this module: what needs gRPC, OpenTelemetry or
# tenacity is imported by the methods that build it, so help does not load them.
if TYPE_CHECKING:
    from bunny.bench import BenchSettings
    from bunny.submitter import SubmitSettings
    from bunny.tls import ClientTls

FAMILIES = ("any", "ipv4", "ipv6")
LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def _ndots(text: str) -> int:
    value = int(text) if text.isdigit() else -1
    if not 0 <= value <= MAX_NDOTS:
        raise SettingError(f"{text!r}: ndots must be a whole number from 0 to {MAX_NDOTS}")
    return value


def _nameserver(text: str) -> HostPort:
    return parse_ip_port(text, default_port=53)


def _seconds(text: str) -> float:
    value = non_negative_float(text)
    if value == 0:
        raise SettingError(f"{text!r}: the timeout must be more than 0 seconds")
    return value


def _keepalive_interval(text: str) -> float:
    value = non_negative_float(text)
    try:
        Keepalive(interval_s=value)  # its own check, so that flag and code agree
    except ValueError as exc:
        raise SettingError(f"{text!r}: {exc}") from None
    return value


def _hosts_file(text: str) -> str | None:
    stripped = text.strip()
    if not stripped:
        raise SettingError("expected a path, or none for no hosts file")
    return None if stripped.lower() == "none" else stripped


def _pem_path(text: str) -> Path:
    if not text.strip():
        raise SettingError("expected a path to a PEM file, got an empty value")
    return Path(text.strip()).expanduser()


def _payload_bytes(text: str) -> int:
    if not text.isdigit():
        raise SettingError(f"{text!r}: the payload size must be a whole number of bytes")
    return int(text)


def _payload_text(text: str) -> str:
    if text.startswith("@"):
        # curl's and grpcurl's way to name a file: sent as text, it would be a silent surprise.
        raise SettingError(
            f"{text!r}: --payload sends its text as it is, not a file's content; give "
            f"--payload-file {text[1:] or 'PATH'} to send the file (text that starts with @ "
            "goes through --payload-file - on standard input)"
        )
    return text


def _payload_file(text: str) -> str:
    if not text.strip():
        raise SettingError("expected a path, or - for standard input")
    return text


def _max_payload_bytes(text: str) -> int:
    value = positive_int(text)
    if value > LARGEST_MAX_BYTES:
        raise SettingError(f"{text!r}: at most {LARGEST_MAX_BYTES} bytes (256 MiB)")
    return value


def _log_level(text: str) -> str:
    return choice(*LOG_LEVELS)(text.strip().upper())


@dataclass(frozen=True, slots=True)
class BunnyConfig:
    """Everything a ``bunny`` command needs to know; checked when built.

    Each field's ``doc`` is its documentation and its flag's ``--help``.
    """

    # --- where relay is -------------------------------------------------------------------
    target: Target | None = setting(
        None,
        doc="relay's DNS name (or an IP) and port, e.g. relay.private.aws.internal:50051",
        parse=parse_target,
        metavar="NAME:PORT",
    )
    name: str | None = setting(
        None, doc="the name to resolve, e.g. relay.private.aws.internal", metavar="NAME"
    )

    # --- how names are resolved -----------------------------------------------------------
    nameserver: tuple[HostPort, ...] = setting(
        (),
        doc="ask this nameserver (repeat for several); without --resolv-conf, "
        "/etc/resolv.conf is then not read at all",
        parse=_nameserver,
        metavar="IP[:PORT]",
        repeat=True,
    )
    resolv_conf: str | None = setting(
        None,
        doc="read nameservers, search list, ndots, timeout and attempts from this file "
        "(unset: /etc/resolv.conf unless --nameserver is given)",
        metavar="PATH",
    )
    ndots: int | None = setting(
        None,
        doc="override resolv.conf's ndots; names with at least this many dots are tried "
        "as given first (a trailing dot always means exactly one name)",
        parse=_ndots,
        metavar="N",
    )
    family: str = setting(
        "any",
        doc="which address records to ask for: any (A and AAAA), ipv4 (A) or ipv6 (AAAA)",
        parse=choice(*FAMILIES),
        metavar="{any,ipv4,ipv6}",
    )
    hosts_file: str | None = setting(
        DEFAULT_HOSTS_FILE,
        doc="answer names listed in this hosts file from it before asking DNS, as glibc's "
        "'hosts: files dns' does (none: read no hosts file)",
        parse=_hosts_file,
        metavar="PATH",
    )

    # --- the jobs --------------------------------------------------------------------------
    kind: str = setting("echo", doc="the job kind relay should run", metavar="KIND")
    payload: str | None = setting(
        None,
        doc="the job's payload, as UTF-8 text (a file's bytes: --payload-file)",
        parse=_payload_text,
        metavar="TEXT",
    )
    payload_file: str | None = setting(
        None,
        doc="send this file's bytes as the payload, as they are, binary too (- reads "
        "standard input)",
        parse=_payload_file,
        metavar="PATH",
    )
    max_payload_bytes: int = setting(
        DEFAULT_MAX_BYTES,
        doc="the largest payload bunny sends; relay's default limit, which bunny cannot ask "
        "relay for: give relay's --max-payload-bytes when it has another",
        parse=_max_payload_bytes,
        metavar="N",
    )
    count: int = setting(1, doc="how many jobs to send", parse=positive_int, metavar="N")
    concurrency: int = setting(
        8, doc="how many jobs are in flight at once", parse=positive_int, metavar="N"
    )
    job_id: str | None = setting(
        None,
        doc="use this job id (with --count N: ID-1 … ID-N) instead of fresh UUIDs, "
        "so resubmitting is safe",
        metavar="ID",
    )
    stream: bool = setting(
        False,
        doc="send jobs over one RunBatches stream per relay address, several per message",
        switch=True,
    )
    timeout: float = setting(
        30.0,
        doc="each job's deadline in seconds, its lookups and retries included",
        parse=_seconds,
        metavar="SECONDS",
    )
    attempts: int | None = setting(
        None,
        doc="the most attempts per job (unset: as many as fit in --timeout); a failure that "
        "can pass (relay unreachable or restarting, draining, overloaded, a lookup that timed "
        "out) is retried, at most 1 s apart",
        parse=positive_int,
        metavar="N",
    )
    keepalive: float = setting(
        Keepalive().interval_s,
        doc="ping relay this often on each connection, to keep it open through NAT and "
        "VPN gateways and to notice a dead one within 10 s more (0: off; at least 1)",
        parse=_keepalive_interval,
        metavar="SECONDS",
    )

    # --- diagnose ----------------------------------------------------------------------------
    hop: tuple[Hop, ...] = setting(
        (),
        doc="a DNS hop, in order from the pod outward (repeat), e.g. cluster-dns=10.0.0.10",
        parse=parse_hop,
        metavar="LABEL=IP[:PORT]",
        repeat=True,
    )
    query_timeout: float = setting(
        2.0, doc="seconds to wait for each query", parse=_seconds, metavar="SECONDS"
    )
    alive_query: tuple[AliveQuery, ...] = setting(
        (),
        doc="a question the hops answer themselves, asked of a hop silent for relay's name "
        "to tell a hop that is down from one whose upstream is silent (repeat; asked with "
        "'. NS' and 'version.bind/TXT/CH'), e.g. cluster.local/SOA",
        parse=parse_alive_query,
        metavar="NAME[/TYPE[/CLASS]]",
        repeat=True,
    )

    # --- bench -------------------------------------------------------------------------------
    duration: float = setting(
        10.0, doc="seconds of measured load (after warm-up)", parse=_seconds, metavar="SECONDS"
    )
    warmup: float = setting(
        1.0, doc="seconds of load before measuring", parse=non_negative_float, metavar="SECONDS"
    )
    payload_bytes: int = setting(
        100, doc="size of each job's payload", parse=_payload_bytes, metavar="N"
    )

    # --- TLS to relay --------------------------------------------------------------------------
    tls: bool = setting(
        False,
        doc="talk TLS to relay, verifying its certificate against relay's DNS name, the NAME "
        "of NAME:PORT (implied by any --tls-* file)",
        switch=True,
    )
    tls_ca: Path | None = setting(
        None,
        doc="CA bundle to verify relay's certificate with (default: the system's roots)",
        parse=_pem_path,
        metavar="PEM",
    )
    tls_cert: Path | None = setting(
        None,
        doc="client certificate chain for relay's mutual TLS (re-read when it changes)",
        parse=_pem_path,
        metavar="PEM",
    )
    tls_key: Path | None = setting(
        None, doc="the key of --tls-cert", parse=_pem_path, metavar="PEM"
    )

    # --- output ----------------------------------------------------------------------------------
    json: bool = setting(False, doc="print JSON for machines", switch=True)
    log_format: str = setting(
        "text", doc="log line format", parse=choice(*LOG_FORMATS), metavar="{text,json}"
    )
    log_level: str = setting(
        "WARNING",
        doc="lowest level logged",
        parse=_log_level,
        metavar="{DEBUG,INFO,WARNING,ERROR}",
    )

    def __post_init__(self) -> None:
        if self.ndots is not None and not 0 <= self.ndots <= MAX_NDOTS:
            raise SettingError(f"ndots: {self.ndots} is not in 0-{MAX_NDOTS}")
        if self.family not in FAMILIES:
            raise SettingError(f"family: {self.family!r} is not one of {', '.join(FAMILIES)}")
        for name in ("count", "concurrency"):
            if getattr(self, name) < 1:
                raise SettingError(f"{name}: {getattr(self, name)} must be at least 1")
        if self.attempts is not None and self.attempts < 1:
            raise SettingError(f"attempts: {self.attempts} must be at least 1")
        for name in ("timeout", "query_timeout", "duration"):
            value = getattr(self, name)
            if not (value > 0 and math.isfinite(value)):
                raise SettingError(f"{name}: {value} must be more than 0 seconds")
        if not (self.warmup >= 0 and math.isfinite(self.warmup)):
            raise SettingError(f"warmup: {self.warmup} must be 0 seconds or more")
        if self.payload is not None and self.payload_file is not None:
            raise SettingError(
                "payload: --payload and --payload-file cannot both be given: the payload is "
                "either that text or that file's bytes"
            )
        if not 1 <= self.max_payload_bytes <= LARGEST_MAX_BYTES:
            raise SettingError(
                f"max_payload_bytes: {self.max_payload_bytes} is not in 1-{LARGEST_MAX_BYTES}"
            )
        if self.payload_bytes < 0:
            raise SettingError(f"payload_bytes: {self.payload_bytes} must be 0 or more")
        try:
            Keepalive(interval_s=self.keepalive)
        except ValueError as exc:
            raise SettingError(f"keepalive: {exc}") from None
        if (self.tls_cert is None) != (self.tls_key is None):
            raise SettingError("tls_cert: --tls-cert and --tls-key must be given together")
        if self.log_format not in LOG_FORMATS:
            raise SettingError(f"log_format: {self.log_format!r} is not one of text, json")
        if self.log_level not in LOG_LEVELS:
            raise SettingError(f"log_level: {self.log_level!r} is not one of {LOG_LEVELS}")

    def required_target(self) -> Target:
        if self.target is None:
            raise SettingError(
                "--target (or BUNNY_TARGET) is required, e.g. relay.private.aws.internal:50051"
            )
        return self.target

    def job_payload(self) -> bytes:
        """The payload to send, read now from ``--payload-file`` when given; SettingError when
        it cannot be read or is over ``--max-payload-bytes``."""
        if self.payload_file is not None:
            return read_payload(self.payload_file, self.max_payload_bytes)
        data = (self.payload or "").encode("utf-8")
        if len(data) > self.max_payload_bytes:
            raise too_large(f"{len(data)} bytes", self.max_payload_bytes, "--payload")
        return data

    def resolver_settings(self) -> ResolverSettings:
        """How to resolve, reading resolv.conf now when it is to be read."""
        return ResolverSettings.from_sources(
            resolv_conf=self.resolv_conf,
            nameservers=self.nameserver,
            ndots=self.ndots,
            hosts_file=self.hosts_file,
            family=self.family,
        )

    def client_tls(self) -> ClientTls | None:
        """TLS to relay, its files read now; None for plaintext."""
        from bunny.tls import ClientTls, TlsFiles

        files = TlsFiles(ca=self.tls_ca, cert=self.tls_cert, key=self.tls_key)
        if not self.tls and not files.paths:
            return None
        return ClientTls(files)

    def submit_settings(self) -> SubmitSettings:
        from bunny.retry import RetryPolicy
        from bunny.submitter import SubmitSettings

        return SubmitSettings(timeout_s=self.timeout, retry=RetryPolicy(attempts=self.attempts))

    def keepalive_settings(self) -> Keepalive:
        return Keepalive(interval_s=self.keepalive)

    def bench_settings(self) -> BenchSettings:
        from bunny.bench import BenchSettings

        return BenchSettings(
            duration_s=self.duration,
            concurrency=self.concurrency,
            warmup_s=self.warmup,
            stream=self.stream,
            payload_bytes=self.payload_bytes,
        )
