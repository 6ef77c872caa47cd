"""The ``bunny`` command: ``submit`` jobs to relay, ``resolve`` relay's name and show every
query, ``diagnose`` the DNS path hop by hop, ``bench`` a relay.

Every flag has a ``BUNNY_…`` environment variable; a flag on the command line
wins. The flags are the fields of :class:`bunny.config.BunnyConfig`, with their
``--help`` taken from there; :data:`COMMANDS` says which command has which.
Exit status: 0 when every job succeeded (or the name resolved), 1 when any job
failed (or the lookup failed), 2 for bad flags, settings or files.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from bunny.batch import build_requests, run_all
from bunny.bench import run_bench
from bunny.config import BunnyConfig
from bunny.diagnose import Diagnoser, render_table
from bunny.dns.resolvconf import DEFAULT_PATH as DEFAULT_RESOLV_CONF
from bunny.dns.resolver import Resolver
from bunny.dns.tracing import TracedResolver
from bunny.errors import BunnyError
from bunny.outcome import JobOutcome
from bunny.relaypool import RelayPool
from bunny.streaming import StreamSubmitter
from bunny.submitter import JobSubmitter, UnarySubmitter
from bunny.targets import LiteralAddress
from bunny.tracing import BunnyTelemetry
from bunnyrelay.logs import configure_logging
from bunnyrelay.settings import (
    EnvArgumentParser,
    SettingError,
    add_options,
    from_namespace,
)
from bunnyrelay.telemetry import setup_telemetry

log = logging.getLogger("bunny")

ENV_PREFIX = "BUNNY_"
_DNS = ("nameserver", "resolv_conf", "ndots", "family", "hosts_file")
_TLS = ("tls", "tls_ca", "tls_cert", "tls_key")
_OUTPUT = ("json", "log_format", "log_level")


@dataclass(frozen=True)
class Command:
    """One ``bunny`` command: what it is, and which of the config's fields are its flags."""

    help: str
    description: str
    flags: tuple[str, ...]
    positional: str | None = None
    """A field given as the command's argument instead of a flag."""
    defaults: Mapping[str, object] = field(default_factory=dict)
    """Defaults of this command that differ from the field's own."""


COMMANDS: dict[str, Command] = {
    "submit": Command(
        "send jobs to relay and print their results",
        "Send jobs to relay, found by DNS, and print one line per job. A job is retried "
        "within its deadline while its failure can pass.",
        (
            "target",
            *_DNS,
            "kind",
            "payload",
            "count",
            "concurrency",
            "job_id",
            "stream",
            "timeout",
            "attempts",
            "keepalive",
            *_TLS,
            *_OUTPUT,
        ),
    ),
    "resolve": Command(
        "resolve a name and show every query sent",
        "Resolve a name the way bunny does before every job, and show every query sent.",
        (*_DNS, *_OUTPUT),
        positional="name",
    ),
    "diagnose": Command(
        "ask every DNS hop and relay itself, and say which hop broke",
        "Ask every DNS hop for relay's name, show what the search list costs, dial every "
        "address found, and say which hop broke.",
        (
            "hop",
            "resolv_conf",
            "family",
            "hosts_file",
            "query_timeout",
            "alive_query",
            *_TLS,
            *_OUTPUT,
        ),
        positional="target",
        defaults={"family": "ipv4"},
    ),
    "bench": Command(
        "load relay with jobs through bunny's own submitters and report jobs/s and latency",
        "Keep jobs in flight against relay for a while, the way bunny submit sends them, and "
        "report jobs/s, latency, bunny's CPU per job and where DNS answers came from.",
        (
            "target",
            *_DNS,
            "duration",
            "warmup",
            "concurrency",
            "stream",
            "payload_bytes",
            *_TLS,
            *_OUTPUT,
        ),
        defaults={"concurrency": 64},
    ),
}


def _positional(parser: EnvArgumentParser, name: str) -> None:
    (each,) = [f for f in fields(BunnyConfig) if f.name == name]
    parse = each.metadata["parse"]

    def convert(text: str) -> object:
        try:
            return parse(text)
        except SettingError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = name
    parser.add_argument(
        name, type=convert, metavar=each.metadata["metavar"], help=each.metadata["doc"]
    )


def build_parser() -> EnvArgumentParser:
    parser = EnvArgumentParser(
        prog="bunny",
        env_prefix=ENV_PREFIX,
        description="Send jobs to relay, found by DNS with every lookup retried and traced.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, command in COMMANDS.items():
        sub = commands.add_parser(
            name, env_prefix=ENV_PREFIX, help=command.help, description=command.description
        )
        if command.positional is not None:
            _positional(sub, command.positional)
        add_options(sub, BunnyConfig, command.flags, defaults=command.defaults)
    return parser


def _print_outcome(outcome: JobOutcome, as_json: bool) -> None:
    if as_json:
        print(json.dumps(outcome.as_dict()), flush=True)
        return
    line = outcome.as_dict()
    where = f"{line['relay_address']} ({line['relay_instance']})" if line["relay_address"] else "-"
    text = (
        f"{outcome.status:<9} {outcome.job_id}  relay={where}  attempts={outcome.attempts}  "
        f"{outcome.duration_ms:.1f} ms  trace={outcome.trace_id}"
    )
    if outcome.error is not None:
        text += f"\n          {outcome.error.type}: {outcome.error.message}"
    elif line["output"] is not None:
        text += f"\n          output: {line['output'][:200]}"
    print(text, flush=True)


def _address_source(
    config: BunnyConfig, telemetry: BunnyTelemetry
) -> TracedResolver | LiteralAddress:
    """The target's resolver (its files read now), or the IP literal the target is."""
    target = config.required_target()
    if isinstance(target.host, LiteralAddress):
        return target.host
    return telemetry.dns.wrap(Resolver(config.resolver_settings()))


async def _submit(config: BunnyConfig, telemetry: BunnyTelemetry) -> int:
    target = config.required_target()
    tls = config.client_tls()  # before anything is opened: bad files are a SettingError
    source = _address_source(config, telemetry)
    pool = RelayPool(
        source, str(target.host), target.port, tls=tls, keepalive=config.keepalive_settings()
    )
    submitter_class = StreamSubmitter if config.stream else UnarySubmitter
    submitter: JobSubmitter = submitter_class(pool, config.submit_settings(), telemetry)
    requests = build_requests(
        kind=config.kind,
        payload=config.payload.encode("utf-8"),
        count=config.count,
        job_id=config.job_id,
    )
    succeeded = failed = 0
    try:
        async for outcome in run_all(submitter, requests, concurrency=config.concurrency):
            _print_outcome(outcome, config.json)
            if outcome.ok:
                succeeded += 1
            else:
                failed += 1
    finally:
        await submitter.close()
        await pool.close(grace=1.0)
        await source.close()
    print(
        f"bunny: {succeeded + failed} jobs, {succeeded} succeeded, {failed} failed", file=sys.stderr
    )
    return 0 if failed == 0 else 1


async def _diagnose(config: BunnyConfig, telemetry: BunnyTelemetry) -> int:
    target = config.required_target()
    if isinstance(target.host, LiteralAddress):
        raise SettingError(f"{target.host}: diagnose needs relay's DNS name, not an IP address")
    # Without hops, the path to check is the one the pod's own resolv.conf gives.
    resolv_conf = config.resolv_conf or (None if config.hop else DEFAULT_RESOLV_CONF)
    diagnoser = Diagnoser(
        str(target.host),
        target.port,
        config.hop,
        resolv_conf=resolv_conf,
        family=config.family,
        timeout=config.query_timeout,
        tls=config.client_tls(),
        alive_queries=config.alive_query,
        hosts_file=config.hosts_file,
        telemetry=telemetry,
    )
    diagnosis = await diagnoser.run()
    print(json.dumps(diagnosis.as_dict()) if config.json else render_table(diagnosis))
    return 0 if diagnosis.verdict.ok else 1


async def _resolve(config: BunnyConfig, telemetry: BunnyTelemetry) -> int:
    name = config.name or ""
    resolver = telemetry.dns.wrap(Resolver(config.resolver_settings()))
    try:
        resolution = await resolver.resolve(name)
    except BunnyError as exc:
        if config.json:
            print(
                json.dumps(
                    {
                        "name": name,
                        "error": {"type": type(exc).__name__, "message": str(exc)},
                        "queries": [q.as_dict() for q in getattr(exc, "queries", ())],
                    }
                )
            )
        else:
            print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    finally:
        await resolver.close()
    if config.json:
        print(json.dumps(resolution.as_dict()))
    else:
        print(resolution.describe())
    return 0


async def _bench(config: BunnyConfig, telemetry: BunnyTelemetry) -> int:
    target = config.required_target()
    tls = config.client_tls()
    literal = isinstance(target.host, LiteralAddress)
    report = await run_bench(
        target,
        config.bench_settings(),
        resolver=None if literal else config.resolver_settings(),
        tls=tls,
        progress=sys.stderr,
        telemetry=telemetry,
    )
    print(json.dumps(report.as_dict()) if config.json else report.render(), flush=True)
    return 0 if report.ok else 1


RUN: dict[str, Callable[[BunnyConfig, BunnyTelemetry], Coroutine[Any, Any, int]]] = {
    "submit": _submit,
    "resolve": _resolve,
    "diagnose": _diagnose,
    "bench": _bench,
}


def main(argv: Sequence[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = from_namespace(BunnyConfig, args, env_prefix=ENV_PREFIX)
    except SettingError as exc:
        parser.exit(2, f"bunny: error: {exc}\n")
    configure_logging("bunny", fmt=config.log_format, level=config.log_level)
    try:
        telemetry = setup_telemetry("bunny")
    except SettingError as exc:
        parser.exit(2, f"bunny: error: {exc}\n")
    try:
        code = asyncio.run(RUN[args.command](config, BunnyTelemetry()))
    except SettingError as exc:
        parser.exit(2, f"bunny: error: {exc}\n")
    except KeyboardInterrupt:
        code = 130
    finally:
        telemetry.shutdown()
    sys.exit(code)
