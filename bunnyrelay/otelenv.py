"""The standard ``OTEL_*`` variables bunny and relay depend on, checked before anything starts.

The SDK and its exporters read these variables too, but they accept nearly anything and fail
later, one export at a time, in a log line nobody reads: a sampler name with a typo falls back
to the default, and an endpoint such as ``::garbage::`` is taken as given and then fails every
export. Here each value the process depends on is checked once, at start, and a bad one is a
:class:`SettingError` naming the variable, what is wrong and what would do.

- ``OTEL_TRACES_SAMPLER`` / ``OTEL_TRACES_SAMPLER_ARG``: a known sampler, a ratio from 0 to 1.
- ``OTEL_EXPORTER_OTLP_ENDPOINT`` and the per-signal ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` /
  ``OTEL_EXPORTER_OTLP_METRICS_ENDPOINT``: the one a signal will use is an ``http://`` or
  ``https://`` URL with a host (the only form OTLP/HTTP takes), or, over OTLP/gRPC, also a
  gRPC target (``HOST:PORT``, ``dns:///HOST:PORT``, ``unix:PATH``), as the specification allows.
- ``OTEL_EXPORTER_OTLP_PROTOCOL`` (and per signal): ``grpc`` or ``http/protobuf``, the
  specification's default.
- ``OTEL_EXPORTER_OTLP_COMPRESSION`` (and per signal): ``gzip``, ``deflate`` or ``none``
  (the SDK's gRPC exporter fails to start on ``none``, so the choice is handed to the
  exporters as an argument, never left to them to read).
- ``OTEL_EXPORTER_OTLP_TIMEOUT`` (and per signal): a number above 0.
- ``OTEL_EXPORTER_OTLP_HEADERS`` (and per signal): ``name=value`` pairs separated by commas,
  names that HTTP and gRPC accept. The SDK skips a malformed pair with a warning, so an
  ``Authorization`` header with a typo sends every export unauthenticated.
- ``OTEL_EXPORTER_OTLP_CERTIFICATE``, ``…_CLIENT_CERTIFICATE``, ``…_CLIENT_KEY`` (and per
  signal): files that exist and can be read. The SDK opens them at the first export, and a
  missing one fails every export there.
- ``OTEL_BSP_*``: whole numbers the SDK's batch span processor accepts.
- ``OTEL_METRICS_EXEMPLAR_FILTER``: ``always_on``, ``always_off`` or ``trace_based``.
- ``OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE``: ``cumulative``, ``delta`` or
  ``lowmemory``. The SDK takes anything else for ``cumulative`` with a warning, and a
  ``delta`` misspelt in a deployment whose Collector adds deltas up would undo the sums.
- ``OTEL_TRACES_EXPORTER`` / ``OTEL_METRICS_EXPORTER``: ``none`` turns a signal's export off.
- ``OTEL_PROPAGATORS``: propagators that are installed (``tracecontext``, ``baggage``) or
  ``none``. The API loads them when ``opentelemetry.propagate`` is first imported and raises
  there on a name it cannot find, so this check must run before anything imports it.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Literal
from urllib.parse import urlsplit

from bunnyrelay.settings import SettingError

Signal = Literal["TRACES", "METRICS"]

SAMPLERS = (
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
)
PROTOCOLS = ("grpc", "http/protobuf")
DEFAULT_PROTOCOL = "http/protobuf"
COMPRESSIONS = ("gzip", "deflate", "none")
EXEMPLAR_FILTERS = ("always_on", "always_off", "trace_based")
TEMPORALITIES = ("cumulative", "delta", "lowmemory")
_EXAMPLE_PORT = {"grpc": 4317, "http/protobuf": 4318}
# gRPC target schemes (gRPC's naming document) that the SDK passes to the channel unchanged.
_GRPC_TARGET_SCHEMES = ("dns", "unix", "unix-abstract", "ipv4", "ipv6")
_LABEL = r"[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?"
_HOSTNAME = re.compile(rf"{_LABEL}(\.{_LABEL})*\.?")
# An HTTP field name (RFC 9110's token), which is also what gRPC metadata keys may hold.
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_TLS_FILES = ("CERTIFICATE", "CLIENT_CERTIFICATE", "CLIENT_KEY")


@dataclass(frozen=True, slots=True)
class OtlpDestination:
    """Where one signal is exported: the protocol and the endpoint, as the variables give them."""

    protocol: str
    endpoint: str
    variable: str
    """The variable the endpoint came from, for messages."""
    compression: str | None = None
    """One of :data:`COMPRESSIONS`; None when no variable sets one."""


def check_sampler(environ: Mapping[str, str] = os.environ) -> None:
    """Reject an unknown ``OTEL_TRACES_SAMPLER`` or an out-of-range ratio."""
    sampler = environ.get("OTEL_TRACES_SAMPLER", "").strip().lower()
    if sampler and sampler not in SAMPLERS:
        raise SettingError(
            f"OTEL_TRACES_SAMPLER={sampler!r} is not supported; use one of {', '.join(SAMPLERS)}"
        )
    arg = environ.get("OTEL_TRACES_SAMPLER_ARG", "").strip()
    if arg and sampler.endswith("traceidratio"):
        try:
            ratio = float(arg)
        except ValueError:
            raise SettingError(f"OTEL_TRACES_SAMPLER_ARG={arg!r} is not a number") from None
        if not 0.0 <= ratio <= 1.0:
            raise SettingError(f"OTEL_TRACES_SAMPLER_ARG={arg!r} must be between 0 and 1")


def check_propagators(environ: Mapping[str, str] = os.environ) -> None:
    """Reject an ``OTEL_PROPAGATORS`` entry that names no installed propagator."""
    configured = environ.get("OTEL_PROPAGATORS", "")
    if not configured:
        return
    # The entry points the API itself loads them from, so "installed" means the same here.
    installed = sorted(e.name for e in entry_points(group="opentelemetry_propagator"))
    for name in (part.strip() for part in configured.split(",")):
        if name.lower() == "none":
            return  # the API stops at "none" too, and propagates nothing
        if name not in installed:
            raise SettingError(
                f"OTEL_PROPAGATORS={configured!r}: {name!r} is not an installed propagator; "
                f"use a comma-separated list of {', '.join(installed)}, or none"
            )


def check_batch_span_processor(environ: Mapping[str, str] = os.environ) -> None:
    """Reject ``OTEL_BSP_*`` values the SDK would log a traceback for and then ignore."""
    sizes = {}
    for name, default, least in (
        ("OTEL_BSP_MAX_QUEUE_SIZE", 2048, 1),
        ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512, 1),
        ("OTEL_BSP_SCHEDULE_DELAY", 5000, 1),
        ("OTEL_BSP_EXPORT_TIMEOUT", 30000, 0),
    ):
        text = environ.get(name, "").strip()
        if not text:
            sizes[name] = default
            continue
        if not text.isdigit() or int(text) < least:
            raise SettingError(f"{name}={text!r} must be a whole number of at least {least}")
        sizes[name] = int(text)
    if sizes["OTEL_BSP_MAX_EXPORT_BATCH_SIZE"] > sizes["OTEL_BSP_MAX_QUEUE_SIZE"]:
        raise SettingError(
            "OTEL_BSP_MAX_EXPORT_BATCH_SIZE must not be more than OTEL_BSP_MAX_QUEUE_SIZE "
            f"({sizes['OTEL_BSP_MAX_EXPORT_BATCH_SIZE']} > {sizes['OTEL_BSP_MAX_QUEUE_SIZE']})"
        )


def exemplar_filter(environ: Mapping[str, str] = os.environ) -> str | None:
    """``OTEL_METRICS_EXEMPLAR_FILTER``, one of :data:`EXEMPLAR_FILTERS`, or None when unset."""
    found = _first(environ, "OTEL_METRICS_EXEMPLAR_FILTER")
    return None if found is None else _one_of(*found, EXEMPLAR_FILTERS)


def metrics_temporality(environ: Mapping[str, str] = os.environ) -> str | None:
    """``OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE``, one of :data:`TEMPORALITIES`, or
    None when unset (the SDK's ``cumulative``)."""
    found = _first(environ, "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE")
    return None if found is None else _one_of(*found, TEMPORALITIES)


def otlp_protocol(signal: Signal, environ: Mapping[str, str] = os.environ) -> str:
    """The OTLP protocol for ``signal``, validated."""
    found = _first(environ, f"OTEL_EXPORTER_OTLP_{signal}_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")
    if found is None:
        return DEFAULT_PROTOCOL
    variable, protocol = found
    if protocol not in PROTOCOLS:
        raise SettingError(f"{variable}={protocol!r} is not supported; use grpc or http/protobuf")
    return protocol


def _first(environ: Mapping[str, str], *variables: str) -> tuple[str, str] | None:
    """The first of ``variables`` set to something, and its value, stripped."""
    for variable in variables:
        value = environ.get(variable, "").strip()
        if value:
            return variable, value
    return None


def _one_of(variable: str, value: str, allowed: tuple[str, ...]) -> str:
    if value.lower() not in allowed:
        raise SettingError(
            f"{variable}={value!r} is not supported; use one of {', '.join(allowed)}"
        )
    return value.lower()


def otlp_destination(
    signal: Signal, environ: Mapping[str, str] = os.environ
) -> OtlpDestination | None:
    """Where ``signal`` is exported, checked; None when it is not exported at all."""
    if environ.get(f"OTEL_{signal}_EXPORTER", "otlp").strip().lower() == "none":
        return None
    for variable in (f"OTEL_EXPORTER_OTLP_{signal}_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"):
        endpoint = environ.get(variable, "")
        if endpoint:
            break
    else:
        return None
    protocol = otlp_protocol(signal, environ)
    problem = _endpoint_problem(endpoint, protocol)
    if problem is not None:
        port = _EXAMPLE_PORT[protocol]
        raise SettingError(
            f"{variable}={endpoint!r} is not a usable OTLP endpoint ({protocol}): {problem}; "
            f"expected a URL such as http://otel-collector:{port}"
        )
    timeout = _first(environ, f"OTEL_EXPORTER_OTLP_{signal}_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT")
    if timeout is not None and not _positive_number(timeout[1]):
        raise SettingError(f"{timeout[0]}={timeout[1]!r} must be a number above 0")
    headers = _first(environ, f"OTEL_EXPORTER_OTLP_{signal}_HEADERS", "OTEL_EXPORTER_OTLP_HEADERS")
    if headers is not None:
        _check_headers(*headers)
    for kind in _TLS_FILES:
        path = _first(environ, f"OTEL_EXPORTER_OTLP_{signal}_{kind}", f"OTEL_EXPORTER_OTLP_{kind}")
        if path is not None:
            _check_readable_file(*path)
    compression = _first(
        environ, f"OTEL_EXPORTER_OTLP_{signal}_COMPRESSION", "OTEL_EXPORTER_OTLP_COMPRESSION"
    )
    return OtlpDestination(
        protocol,
        endpoint,
        variable,
        None if compression is None else _one_of(*compression, COMPRESSIONS),
    )


def _check_headers(variable: str, value: str) -> None:
    for pair in value.split(","):
        name, equals, _ = pair.partition("=")
        if not equals or _HEADER_NAME.fullmatch(name.strip()) is None:
            raise SettingError(
                f"{variable}: {pair.strip()!r} is not a name=value pair with a header name; "
                "expected name=value pairs separated by commas, values URL-encoded, "
                "such as authorization=Bearer%20TOKEN"
            )


def _check_readable_file(variable: str, path: str) -> None:
    try:
        with open(path, "rb"):
            pass
    except FileNotFoundError:
        raise SettingError(f"{variable}={path!r}: no such file") from None
    except IsADirectoryError:
        raise SettingError(f"{variable}={path!r} is a directory, not a PEM file") from None
    except OSError as exc:
        raise SettingError(f"{variable}={path!r} cannot be read: {exc.strerror}") from None


def _positive_number(text: str) -> bool:
    try:
        return 0 < float(text) < float("inf")
    except ValueError:
        return False


def _endpoint_problem(endpoint: str, protocol: str) -> str | None:
    """What is wrong with ``endpoint`` for ``protocol``, or None when it will do."""
    if not endpoint:
        return "it is blank"
    if any(char.isspace() for char in endpoint):
        return "it contains white space"
    parts = urlsplit(endpoint)
    scheme = parts.scheme.lower()
    if scheme in ("http", "https"):
        if not parts.netloc:
            return f"no host after {scheme}://"
        try:
            parts.port  # noqa: B018 - urllib checks the port when it is read
        except ValueError:
            return "the port must be a number from 1 to 65535"
        if parts.port == 0:
            return "the port must be a number from 1 to 65535"
        return _host_problem(parts.hostname or "")
    if protocol != "grpc":
        return "OTLP/HTTP needs an http:// or https:// URL"
    if scheme in _GRPC_TARGET_SCHEMES:
        return None if endpoint.partition(":")[2].strip("/") else "the target is empty"
    return _grpc_host_port_problem(endpoint)


def _grpc_host_port_problem(target: str) -> str | None:
    """What is wrong with a gRPC ``HOST:PORT`` or ``[V6]:PORT`` target, or None."""
    if target.startswith("["):
        host, _, rest = target[1:].partition("]")
        if not rest.startswith(":"):
            return "expected [IPV6]:PORT"
        port = rest[1:]
    else:
        host, separator, port = target.rpartition(":")
        if not separator or ":" in host:
            return "neither an http(s):// URL nor a gRPC HOST:PORT target"
    if not port.isdigit() or not 0 < int(port) < 65536:
        return "the port must be a number from 1 to 65535"
    return _host_problem(host)


def _host_problem(host: str) -> str | None:
    if not host:
        return "the host is empty"
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if _HOSTNAME.fullmatch(host) is None or len(host) > 253:
            return f"{host!r} is not a host name or an IP address"
    return None
