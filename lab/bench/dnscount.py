"""An uncached DNS lookup's own cost, in one process, for counting instructions.

On a shared machine CPU time per lookup swings with the load; an instruction count does
not. Here c-ares is replaced by a future the loop settles on its next pass (one A record
for whatever name is asked), so what is counted is the resolver's and OpenTelemetry's own
work, not the network's: every span is encoded with :mod:`bunnyrelay.otlpencode` in
batches of 512 as the batch processor would hand them to the exporter, and the metrics are
the ones bunny records. Each lookup asks a name never asked before, as the DNS benchmark's
uncached rows do, with 32 in flight.

The count of one lookup is the difference of two runs, which takes the start-up out::

    valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.1000 \\
        .venv/bin/python -m lab.bench.dnscount --method traced --lookups 1000
    valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.3000 \\
        .venv/bin/python -m lab.bench.dnscount --method traced --lookups 3000
    # (total of 3000 - total of 1000) / 2000 = instructions per lookup

Without valgrind it prints the CPU µs per lookup of each run.

``--provider sdk`` (the default) traces with the SDK's own ``TracerProvider``, as the DNS
benchmark does; ``--provider bunny`` with the one bunny's command line makes
(:func:`bunnyrelay.keeping.keeping_tracer_provider` with the default keep settings:
light sampled spans, their attributes checked once as they end), for the floor's span and
a traced lookup's alike.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import pycares
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

from bunny.dns.ares import LoopDrivenResolver
from bunny.dns.resolver import Resolver
from bunny.dns.settings import ResolverSettings
from bunny.dns.tracing import DnsTelemetry
from bunnyrelay import semconv
from bunnyrelay.histograms import HotHistogram
from bunnyrelay.keeping import connect_keeping, keeping_tracer_provider
from bunnyrelay.keepsettings import KeepSettings
from bunnyrelay.otlpencode import wire
from bunnyrelay.settings import HostPort
from lab.bench.zone import numbered

METHODS = ("bare", "floor", "traced", "off")
PROVIDERS = ("sdk", "bunny")
_IN_FLIGHT = 32
WARM_UP = 500
"""Lookups made before the measured ones."""
_BATCH = 512
# Never asked: the answers come from the settled futures below.
_NAMESERVER = HostPort("127.0.0.1", 9)

Lookup = Callable[[int], Awaitable[object]]


class _Encoding(SpanProcessor):
    """Encodes ended spans in batches, as the batch span processor's exporter would."""

    def __init__(self) -> None:
        self.pending: list[ReadableSpan] = []

    def on_end(self, span: ReadableSpan) -> None:
        self.pending.append(span)
        if len(self.pending) >= _BATCH:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            wire.serialize_spans(self.pending)
            self.pending = []

    def force_flush(self, timeout_millis: int = 0) -> bool:
        self.flush()
        return True


def _answer_on_the_next_pass(loop: asyncio.AbstractEventLoop) -> Callable[[], None]:
    """c-ares out of the way: every query is answered by a future the loop settles.

    Returns what puts c-ares back."""
    original = LoopDrivenResolver.query_dns

    def query_dns(
        self: LoopDrivenResolver, host: str, qtype: str, qclass: str | None = None
    ) -> asyncio.Future[pycares.DNSResult]:
        future: asyncio.Future[pycares.DNSResult] = loop.create_future()
        record = pycares.DNSRecord(
            name=host,
            type=pycares.QUERY_TYPE_A,
            record_class=pycares.QUERY_CLASS_IN,
            ttl=300,
            data=pycares.ARecordData(addr="10.0.0.1"),
        )
        loop.call_soon(future.set_result, pycares.DNSResult([record], [], []))
        return future

    LoopDrivenResolver.query_dns = query_dns  # type: ignore[method-assign]

    def restore() -> None:
        LoopDrivenResolver.query_dns = original  # type: ignore[method-assign]

    return restore


async def _in_flight(lookup: Lookup, start: int, count: int) -> None:
    todo = iter(range(start, start + count))

    async def worker() -> None:
        for index in todo:
            await lookup(index)

    await asyncio.gather(*(worker() for _ in range(_IN_FLIGHT)))


async def count(method: str, lookups: int, provider: str = "sdk") -> float:
    """Run ``lookups`` lookups of ``method`` after a warm-up; CPU µs per lookup."""
    loop = asyncio.get_running_loop()
    restore = _answer_on_the_next_pass(loop)
    encoding = _Encoding()
    meter_provider = MeterProvider()
    tracer_provider = TracerProvider()
    if provider == "bunny":
        resource = Resource.create({})
        tracer_provider = keeping_tracer_provider(
            TracerProvider(resource=resource), resource, KeepSettings()
        )
    tracer_provider.add_span_processor(encoding)
    connect_keeping(tracer_provider, encoding, meter_provider)
    settings = ResolverSettings(nameservers=(_NAMESERVER,), family="ipv4")
    untraced_provider = TracerProvider(sampler=ALWAYS_OFF)
    ares = LoopDrivenResolver(nameservers=[str(_NAMESERVER)], loop=loop, tries=1, timeout=2.0)
    tracer = tracer_provider.get_tracer("lab.bench.dnscount")
    record = HotHistogram(
        meter_provider.get_meter("lab.bench.dnscount"),
        semconv.METRIC_DNS_LOOKUP_DURATION,
        unit="s",
        description="How long a DNS lookup took",
    ).record
    resolvers: list[Any] = []

    def resolver(provider: TracerProvider) -> Lookup:
        wrapped = DnsTelemetry(tracer_provider=provider, meter_provider=meter_provider).wrap(
            Resolver(settings)
        )
        resolvers.append(wrapped)

        async def lookup(index: int) -> object:
            return await wrapped.resolve(numbered(index))

        return lookup

    async def bare(index: int) -> object:
        return await ares.query_dns(numbered(index), "A")

    async def floor(index: int) -> object:
        # As the DNS benchmark's floor row: the query, one span, the histogram.
        name = numbered(index)
        started = time.monotonic()
        span = tracer.start_span(
            semconv.SPAN_DNS_LOOKUP, attributes={semconv.DNS_QUESTION_NAME: name}
        )
        try:
            return await ares.query_dns(name, "A")
        finally:
            span.end()
            record(name, {semconv.DNS_QUESTION_NAME: name}, time.monotonic() - started)

    chosen: Lookup
    if method == "bare":
        chosen = bare
    elif method == "floor":
        chosen = floor
    else:
        chosen = resolver(tracer_provider if method == "traced" else untraced_provider)
    try:
        await _in_flight(chosen, 0, WARM_UP)
        encoding.flush()
        cpu = time.process_time()
        await _in_flight(chosen, WARM_UP, lookups)
        encoding.flush()
        return (time.process_time() - cpu) / lookups * 1e6
    finally:
        for wrapped in resolvers:
            await wrapped.close()
        await ares.close()
        restore()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.bench.dnscount", description=__doc__)
    parser.add_argument("--method", choices=METHODS, default="traced")
    parser.add_argument("--lookups", type=int, default=3000, help="measured lookups (default 3000)")
    parser.add_argument(
        "--provider",
        choices=PROVIDERS,
        default="sdk",
        help="the SDK's tracer provider (as the DNS benchmark) or bunny's (default sdk)",
    )
    args = parser.parse_args(argv)
    per_lookup = asyncio.run(count(args.method, args.lookups, args.provider))
    print(
        f"{args.method} ({args.provider} provider): {per_lookup:.1f} µs CPU per lookup"
        f" ({args.lookups} lookups)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
