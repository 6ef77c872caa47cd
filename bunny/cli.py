"""The ``bunny`` command: ``submit`` jobs to relay, ``resolve`` relay's name and show every query.

Every flag has a ``BUNNY_…`` environment variable; a flag on the command line
wins. Exit status: 0 when every job succeeded (or the name resolved), 1 when
any job failed (or the lookup failed), 2 for bad flags or settings.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from bunny.bench import BenchSettings, run_bench
from bunny.diagnose import Diagnoser, parse_hop, render_table
from bunny.errors import BunnyError
from bunny.liveness import parse_alive_query
from bunny.outcome import JobOutcome
from bunny.relaypool import Keepalive, RelayPool
from bunny.resolvconf import DEFAULT_PATH as DEFAULT_RESOLV_CONF
from bunny.resolver import Resolver, ResolverSettings
from bunny.retry import RetryPolicy
from bunny.runner import JobRunner, RunSettings, UnaryRunner
from bunny.streaming import StreamRunner
from bunny.submit import build_requests, run_all
from bunny.targets import LiteralAddress, Target, parse_target
from bunny.tls import ClientTls, TlsFiles
from bunnyrelay.logs import configure_logging
from bunnyrelay.settings import (
    EnvArgumentParser,
    HostPort,
    SettingError,
    choice,
    non_negative_float,
    parse_ip_port,
    positive_int,
)
from bunnyrelay.telemetry import setup_telemetry

log = logging.getLogger("bunny")


def _ndots(text: str) -> int:
    value = int(text) if text.isdigit() else -1
    if not 0 <= value <= 15:
        raise SettingError(f"{text!r}: ndots must be a whole number from 0 to 15")
    return value


def _nameserver(text: str) -> HostPort:
    return parse_ip_port(text, default_port=53)


def _timeout(text: str) -> float:
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


def _add_resolver_options(parser: EnvArgumentParser) -> None:
    parser.option(
        "--nameserver",
        parse=_nameserver,
        repeat=True,
        metavar="IP[:PORT]",
        help="ask this nameserver (repeat for several); without --resolv-conf, "
        "/etc/resolv.conf is then not read at all",
    )
    parser.option(
        "--resolv-conf",
        metavar="PATH",
        help="read nameservers, search list, ndots, timeout and attempts from this file "
        "(default: /etc/resolv.conf unless --nameserver is given)",
    )
    parser.option(
        "--ndots",
        parse=_ndots,
        help="override resolv.conf's ndots; names with at least this many dots are tried "
        "as given first (a trailing dot always means exactly one name)",
    )
    parser.option(
        "--family",
        parse=choice("any", "ipv4", "ipv6"),
        default="any",
        help="which address records to ask for",
    )


def _add_output_options(parser: EnvArgumentParser) -> None:
    parser.option("--json", switch=True, default=False, help="print JSON for machines")
    parser.option(
        "--log-format", parse=choice("text", "json"), default="text", help="log line format"
    )
    parser.option(
        "--log-level",
        parse=choice("DEBUG", "INFO", "WARNING", "ERROR"),
        default="WARNING",
        help="log level",
    )


# --- TLS to relay (issue 5): --tls, --tls-ca, --tls-cert, --tls-key ------------------------


def _pem_path(text: str) -> Path:
    if not text.strip():
        raise SettingError("expected a path to a PEM file, got an empty value")
    return Path(text.strip()).expanduser()


def _add_tls_options(parser: EnvArgumentParser) -> None:
    parser.option(
        "--tls",
        switch=True,
        default=False,
        help="talk TLS to relay, verifying its certificate against the DNS name of --target "
        "(implied by any --tls-* file)",
    )
    parser.option(
        "--tls-ca",
        parse=_pem_path,
        metavar="PEM",
        help="CA bundle to verify relay's certificate with (default: the system's roots)",
    )
    parser.option(
        "--tls-cert",
        parse=_pem_path,
        metavar="PEM",
        help="client certificate chain for relay's mutual TLS (re-read when it changes)",
    )
    parser.option("--tls-key", parse=_pem_path, metavar="PEM", help="the key of --tls-cert")


def _client_tls(args: argparse.Namespace) -> ClientTls | None:
    files = TlsFiles(ca=args.tls_ca, cert=args.tls_cert, key=args.tls_key)
    if not args.tls and not files.paths:
        return None
    return ClientTls(files)


def build_parser() -> EnvArgumentParser:
    parser = EnvArgumentParser(
        prog="bunny",
        env_prefix="BUNNY_",
        description="Send jobs to relay, found by DNS with every lookup retried and traced.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    submit = commands.add_parser(
        "submit", env_prefix="BUNNY_", help="send jobs to relay and print their results"
    )
    submit.option(
        "--target",
        parse=parse_target,
        metavar="NAME:PORT",
        help="relay's DNS name (or an IP) and port, e.g. relay.private.aws.internal:50051",
    )
    _add_resolver_options(submit)
    submit.option("--kind", default="echo", help="the job kind relay should run")
    submit.option("--payload", default="", help="the job's payload, as UTF-8 text")
    submit.option("--count", parse=positive_int, default=1, help="how many jobs to send")
    submit.option(
        "--concurrency", parse=positive_int, default=8, help="how many jobs may be in flight"
    )
    submit.option(
        "--job-id",
        metavar="ID",
        help="use this job id (with --count N: ID-1 … ID-N) instead of fresh UUIDs, "
        "so resubmitting is safe",
    )
    submit.option("--stream", switch=True, default=False, help="send jobs over one stream")
    submit.option("--timeout", parse=_timeout, default=30.0, help="each job's deadline in seconds")
    submit.option(
        "--attempts",
        parse=positive_int,
        default=4,
        help="RPC attempts per job (retries on UNAVAILABLE and on overload)",
    )
    submit.option(
        "--keepalive",
        parse=_keepalive_interval,
        default=Keepalive().interval_s,
        metavar="SECONDS",
        help="ping relay this often on each connection, to keep it open through NAT and "
        "VPN gateways and to notice a dead one within 10 s more (0: off; at least 1)",
    )
    _add_tls_options(submit)
    _add_output_options(submit)

    resolve = commands.add_parser(
        "resolve", env_prefix="BUNNY_", help="resolve a name and show every query sent"
    )
    resolve.add_argument("name", help="the name to resolve, e.g. relay.private.aws.internal")
    _add_resolver_options(resolve)
    _add_output_options(resolve)

    diagnose = commands.add_parser(
        "diagnose",
        env_prefix="BUNNY_",
        help="ask every DNS hop and relay itself, and say which hop broke",
    )
    diagnose.add_argument(
        "target", type=_argparse_target, metavar="NAME:PORT", help="relay's DNS name and port"
    )
    diagnose.option(
        "--hop",
        parse=parse_hop,
        repeat=True,
        metavar="LABEL=IP[:PORT]",
        help="a DNS hop, in order from the pod outward (repeat), e.g. cluster-dns=10.0.0.10",
    )
    diagnose.option(
        "--resolv-conf",
        metavar="PATH",
        help="also show what resolving through this resolv.conf costs "
        "(without --hop: /etc/resolv.conf, the pod's own path)",
    )
    diagnose.option(
        "--family", parse=choice("any", "ipv4", "ipv6"), default="ipv4", help="address records"
    )
    diagnose.option(
        "--query-timeout", parse=_timeout, default=2.0, help="seconds to wait for each query"
    )
    diagnose.option(
        "--alive-query",
        parse=parse_alive_query,
        repeat=True,
        metavar="NAME[/TYPE[/CLASS]]",
        help="a question the hops answer themselves, asked of a hop silent for relay's name "
        "to tell a hop that is down from one whose upstream is silent (repeat; asked with "
        "'. NS' and 'version.bind/TXT/CH'), e.g. cluster.local/SOA",
    )
    _add_tls_options(diagnose)
    _add_output_options(diagnose)
    _add_bench_command(commands)
    return parser


def _argparse_target(text: str) -> Target:
    try:
        return parse_target(text)
    except SettingError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _resolver_settings(args: argparse.Namespace) -> ResolverSettings:
    return ResolverSettings.from_sources(
        resolv_conf=args.resolv_conf,
        nameservers=tuple(args.nameserver or ()),
        ndots=args.ndots,
        family=args.family,
    )


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


async def _submit(args: argparse.Namespace) -> int:
    if args.target is None:
        raise SettingError(
            "--target (or BUNNY_TARGET) is required, e.g. relay.private.aws.internal:50051"
        )
    target = args.target
    tls = _client_tls(args)  # before anything is opened: bad files are a SettingError
    if isinstance(target.host, LiteralAddress):
        source: Resolver | LiteralAddress = target.host
    else:
        source = Resolver(_resolver_settings(args))
    pool = RelayPool(
        source,
        str(target.host),
        target.port,
        tls=tls,
        keepalive=Keepalive(interval_s=args.keepalive),
    )
    settings = RunSettings(timeout_s=args.timeout, retry=RetryPolicy(attempts=args.attempts))
    runner: JobRunner = (StreamRunner if args.stream else UnaryRunner)(pool, settings)
    requests = build_requests(
        kind=args.kind, payload=args.payload.encode("utf-8"), count=args.count, job_id=args.job_id
    )
    succeeded = failed = 0
    try:
        async for outcome in run_all(runner, requests, concurrency=args.concurrency):
            _print_outcome(outcome, args.json)
            if outcome.ok:
                succeeded += 1
            else:
                failed += 1
    finally:
        await runner.close()
        await pool.close(grace=1.0)
        await source.close()
    print(
        f"bunny: {succeeded + failed} jobs, {succeeded} succeeded, {failed} failed", file=sys.stderr
    )
    return 0 if failed == 0 else 1


async def _diagnose(args: argparse.Namespace) -> int:
    target: Target = args.target
    if isinstance(target.host, LiteralAddress):
        raise SettingError(f"{target.host}: diagnose needs relay's DNS name, not an IP address")
    # Without hops, the path to check is the one the pod's own resolv.conf gives.
    resolv_conf = args.resolv_conf or (None if args.hop else DEFAULT_RESOLV_CONF)
    diagnoser = Diagnoser(
        str(target.host),
        target.port,
        args.hop or (),
        resolv_conf=resolv_conf,
        family=args.family,
        timeout=args.query_timeout,
        tls=_client_tls(args),
        alive_queries=args.alive_query or (),
    )
    diagnosis = await diagnoser.run()
    print(json.dumps(diagnosis.as_dict()) if args.json else render_table(diagnosis))
    return 0 if diagnosis.verdict.ok else 1


async def _resolve(args: argparse.Namespace) -> int:
    resolver = Resolver(_resolver_settings(args))
    try:
        resolution = await resolver.resolve(args.name)
    except BunnyError as exc:
        if args.json:
            print(
                json.dumps(
                    {
                        "name": args.name,
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
    if args.json:
        print(json.dumps(resolution.as_dict()))
    else:
        print(resolution.describe())
    return 0


# --- bench (issue 6): closed-loop load through the real runners; the logic is bunny/bench.py ---


def _add_bench_command(commands: argparse._SubParsersAction[EnvArgumentParser]) -> None:
    bench = commands.add_parser(
        "bench",
        env_prefix="BUNNY_",
        help="load relay with jobs through bunny's own runners and report jobs/s and latency",
    )
    bench.option(
        "--target",
        parse=parse_target,
        metavar="NAME:PORT",
        help="relay's DNS name (or an IP) and port, e.g. relay.private.aws.internal:50051",
    )
    _add_resolver_options(bench)
    bench.option(
        "--duration", parse=_timeout, default=10.0, help="seconds of measured load (after warm-up)"
    )
    bench.option(
        "--warmup", parse=non_negative_float, default=1.0, help="seconds of load before measuring"
    )
    bench.option("--concurrency", parse=positive_int, default=64, help="jobs kept in flight")
    bench.option(
        "--stream",
        switch=True,
        default=False,
        help="send jobs over RunBatches, several per message",
    )
    bench.option(
        "--payload-bytes", parse=_payload_bytes, default=100, help="size of each job's payload"
    )
    _add_tls_options(bench)
    _add_output_options(bench)


def _payload_bytes(text: str) -> int:
    if not text.isdigit():
        raise SettingError(f"{text!r}: the payload size must be a whole number of bytes")
    return int(text)


async def _bench(args: argparse.Namespace) -> int:
    if args.target is None:
        raise SettingError(
            "--target (or BUNNY_TARGET) is required, e.g. relay.private.aws.internal:50051"
        )
    tls = _client_tls(args)
    literal = isinstance(args.target.host, LiteralAddress)
    report = await run_bench(
        args.target,
        BenchSettings(
            duration_s=args.duration,
            concurrency=args.concurrency,
            warmup_s=args.warmup,
            stream=args.stream,
            payload_bytes=args.payload_bytes,
        ),
        resolver=None if literal else _resolver_settings(args),
        tls=tls,
        progress=sys.stderr,
    )
    print(json.dumps(report.as_dict()) if args.json else report.render(), flush=True)
    return 0 if report.ok else 1


def main(argv: Sequence[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging("bunny", fmt=args.log_format, level=args.log_level)
    try:
        telemetry = setup_telemetry("bunny")
    except SettingError as exc:
        parser.exit(2, f"bunny: error: {exc}\n")
    try:
        command = {
            "submit": _submit,
            "resolve": _resolve,
            "diagnose": _diagnose,
            "bench": _bench,
        }[args.command]
        code = asyncio.run(command(args))
    except SettingError as exc:
        parser.exit(2, f"bunny: error: {exc}\n")
    except KeyboardInterrupt:
        code = 130
    finally:
        telemetry.shutdown()
    sys.exit(code)
