"""Running a ``bunny`` command once its flags are read: the work behind :mod:`bunny.cli`.

Kept apart from the parser so that ``bunny --help`` and a bad flag load none of this
(gRPC, OpenTelemetry's API, the resolver): :mod:`bunny.cli` imports it only to run.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from bunny import progress
from bunny.batch import build_requests, run_all
from bunny.bench import run_bench
from bunny.config import BunnyConfig
from bunny.diagnose import Diagnoser, render_table
from bunny.dns.resolvconf import DEFAULT_PATH as DEFAULT_RESOLV_CONF
from bunny.dns.resolver import Resolver
from bunny.dns.tracing import TracedResolver
from bunny.errors import BunnyError, DnsLookupFailed
from bunny.outcome import JobOutcome
from bunny.relaypool import RelayPool
from bunny.streaming import StreamSubmitter
from bunny.submitter import JobSubmitter, UnarySubmitter
from bunny.targets import LiteralAddress
from bunny.tracing import BunnyTelemetry
from bunnyrelay.settings import SettingError


def _print_outcome(outcome: JobOutcome, as_json: bool) -> None:
    if as_json:
        print(json.dumps(outcome.as_dict()), flush=True)
        return
    print(describe_outcome(outcome), flush=True)


def describe_outcome(outcome: JobOutcome) -> str:
    """A job's outcome for people: one line, then its output or its error."""
    line = outcome.as_dict()
    where = line["relay_address"] or "-"
    if line["relay_instance"]:
        where += f" ({line['relay_instance']})"
    text = (
        f"{outcome.status:<9} {outcome.job_id}  relay={where}  attempts={outcome.attempts}  "
        f"{outcome.duration_ms:.1f} ms{'  replayed' if outcome.replayed else ''}  "
        f"trace={outcome.trace_id}"
    )
    if outcome.error is not None:
        text += f"\n          {outcome.error.type}: {outcome.error.message}"
    elif line["output"] is not None:
        text += f"\n          output: {line['output'][:200] or '(empty)'}"
    elif outcome.output:
        text += (
            f"\n          output: {len(outcome.output)} bytes, not UTF-8 text "
            "(--json gives them as output_base64)"
        )
    return text


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
    payload = config.job_payload()
    source = _address_source(config, telemetry)
    pool = RelayPool(
        source, str(target.host), target.port, tls=tls, keepalive=config.keepalive_settings()
    )
    submitter_class = StreamSubmitter if config.stream else UnarySubmitter
    submitter: JobSubmitter = submitter_class(pool, config.submit_settings(), telemetry)
    requests = build_requests(
        kind=config.kind,
        payload=payload,
        count=config.count,
        job_id=config.job_id,
    )
    succeeded = failed = replayed = 0
    show = progress.wanted(config.count, as_json=config.json)
    try:
        with progress.job_progress(config.count, show=show) as shown:
            async for outcome in run_all(submitter, requests, concurrency=config.concurrency):
                _print_outcome(outcome, config.json)
                shown.finished(ok=outcome.ok)
                if outcome.ok:
                    succeeded += 1
                else:
                    failed += 1
                replayed += outcome.replayed
    finally:
        await submitter.close()
        await pool.close(grace=1.0)
        await source.close()
    again = f" ({replayed} replayed: relay had run those job ids already)" if replayed else ""
    total = succeeded + failed
    print(
        f"bunny: {total} job{'' if total == 1 else 's'}, {succeeded} succeeded{again}, "
        f"{failed} failed",
        file=sys.stderr,
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
            print(_describe_failed_lookup(exc), file=sys.stderr)
        return 1
    finally:
        await resolver.close()
    if config.json:
        print(json.dumps(resolution.as_dict()))
    else:
        print(resolution.describe())
    return 0


def _describe_failed_lookup(exc: BunnyError) -> str:
    """For people: what failed, every query sent, and what that failure usually means."""
    lines = [f"{type(exc).__name__}: {exc}"]
    if isinstance(exc, DnsLookupFailed):
        if exc.queries:
            lines.append("queries sent:")
            lines.extend(query.describe() for query in exc.queries)
        if exc.likely_cause:
            lines.append(f"likely cause: {exc.likely_cause}")
    return "\n".join(lines)


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


def run(command: str, config: BunnyConfig) -> int:
    """Run ``command``; its exit status. Raises SettingError for a file it cannot use."""
    return asyncio.run(RUN[command](config, BunnyTelemetry()))
