"""docs/benchmarks.md: the results of the last ``make bench`` and the method behind them.

The whole file is generated, method included, so the text and the code that
measures cannot drift apart unnoticed: change the method here.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from lab.bench import costs as job_costs
from lab.bench.cases import FLOOR_OFF, FLOOR_TRACED
from lab.bench.report import (
    markdown_rows,
    markdown_table,
    ratio_text,
    relay_targets,
    target_measured,
    target_value_text,
)
from lab.bench.rounds import CaseRounds, TargetVerdict

METHOD = """\
## Method

**One process per side.** Every server (relay, or the raw echo servicer) and every client
(`bunny bench`, the raw client, ghz) is a process of its own, started fresh for each case, so
that CPU time and memory are attributed to the side that spent them. The benchmark's own
process only starts them, reads /proc and runs the OTLP receiver.

**Closed loop.** A client keeps *N* jobs in flight (64 unless said otherwise): when one
finishes, the next starts. `bunny bench` and the raw client share the loop
(`bunny/loadgen.py`), so both are measured alike. Each case runs a warm-up (channels connect,
caches fill; nothing is counted), then the measured window. A job counts when it finishes
inside the window. Every job has a fresh id (relay remembers ids) and a 100-byte payload.

**The baseline is measured in the same run**: `lab/bench/rawecho.py`, a minimal
grpc.aio servicer of the same proto (answers every job with its payload; no telemetry, no
checks, no store) and a minimal client (one channel; unary calls, or one `RunStream` call
with one job per message matched by id: the plainest stream). It runs first
in every round, and again last, so the drift of a shared machine over a round shows.
bunny's stream cases use `RunBatches` instead: bunny sends the jobs waiting on a stream
together, up to a quarter of those in flight per message (so that relay works on one batch
while bunny fills the next), and relay answers with every result that is ready.

**Rounds.** The machine is noisy: back-to-back 4-second runs of the same raw case ranged from
2,900 to 3,900 jobs/s, so a single run of each case cannot tell 0.65x from 0.78x, and a
target could be met in two runs out of three. So every case runs in each of four rounds
(`--rounds`; the settings above say how many this run had), a round being every case once in
the order of the table, so that each baseline and the cases measured against it are
interleaved in time. A case's ratio is taken in each round against its baseline's result *in
that same round*; the tables show the median of those per-round ratios (with two rounds,
their mean) and, with more than one round, their lowest and highest in brackets. The targets
are judged on that median. The ratio of the medians is not used: it can set a round the
machine was fast in against one it was slow in. Four rounds, not three: twins swap places
in even rounds, so an even number runs each order as often. Four rounds of every case, the
DNS benchmark and the costs take about 15 minutes, each case measuring 6 s per round.

**Side by side.** Keeping what went wrong costs an unsampled job a few percent of a stream
job, and its target allows 5 %. Runs of one case a minute apart differ by more than that
here (the machine's speed drifted by a third within an hour), however many rounds are run.
So the 10 % cases with keeping are measured side by side with their keeping-off twin: both
pairs run at the same time, each with its own relay and bunny, and whatever the machine does
meanwhile falls on both alike. Each pair gets about half the machine, so these rows are read
against each other only (their *x base* is against the twin). This is duet benchmarking
(Bulej et al., "Duet Benchmarking: Improving Measurement Accuracy in the Cloud", ICPE 2020).
Two runs of the same keeping-off case side by side, six rounds on this machine, read
1.01x (0.96-1.05) of each other; consecutive runs, 1.00x (0.82-1.29).

**What the columns mean.**
- Every figure is the median over the rounds, except *failed*, the sum of every round (the
  rounds that had failures are named), and the *MiB* columns, the largest of any round, as
  memory targets are limits.
- *jobs/s*: successful jobs per second of the window; *x base* is the median over the rounds
  of the ratio against the raw grpc.aio case of the same mode in the same round (ghz rows:
  ghz against the raw server), then the lowest and the highest of those ratios. The CPU
  columns' *x* are medians of per-round ratios too (`--json` has every range).
- *p50/p99*: latency of each job as the client saw it (for bunny: lookup, retries and spans
  included).
- *client CPU µs/job*: the client process's user + system CPU time over the window (every
  thread, gRPC's included) per successful job. For ghz, its CPU over its whole run
  (`getrusage(RUSAGE_CHILDREN)`).
- *server CPU µs/job*: the server's `utime + stime` from `/proc/PID/stat`, read when the
  client says the window opens and closes (ghz: over its whole run).
- *MiB*: peak resident memory (`VmHWM`); the client reports its own, the server's is read
  from `/proc/PID/status` before it is stopped. relay remembers every job id it has run
  (the memory store keeps up to `--dedupe-capacity` results, 100,000 by default), so its
  peak grows with the number of jobs a case runs, not only with the jobs in flight (so
  shorter windows show a lower peak for the memory store).
- *spans/job*: spans that reached the OTLP receiver from both sides, per job run (warm-up
  included): a check that the sampler did what the case says and that nothing was dropped.
- *DNS q/job*: queries that reached the DNS server per job run.
- *load 1m*: the machine's one-minute load average when the case ended.

**Tracing.** Set in both processes with the standard variables: off is
`OTEL_TRACES_SAMPLER=always_off`, 10 % is `parentbased_traceidratio` with `0.1` (relay
follows bunny's decision), 100 % is `parentbased_always_on`. In every bunny and relay case
`OTEL_EXPORTER_OTLP_ENDPOINT` points at a local OTLP receiver (in the benchmark's process; it
only counts the spans), so sampled spans are exported with the SDK's default batch
settings, as in a deployment. Every traced case (10 %, 100 %) runs twice, right after each
other: over OTLP/gRPC and over OTLP http/protobuf (*OTLP http*, the specification's
default protocol and so the project's), held to 0.95x of the gRPC one; the gRPC one first
in odd rounds, the http one first in even rounds.

**The floor and the peer.** The floor (`lab/bench/floor.py`) is the raw pair with only the
per-call telemetry this project's conventions ask for, set up by the project's own
telemetry bootstrap. The peer (`lab/bench/peer.py`) is the raw pair traced the way people
trace gRPC in Python today: `opentelemetry-instrumentation-grpc`'s aio client and server
interceptors (a CLIENT and a SERVER span per call, W3C context, no metrics), every call
sampled, the SDK's own OTLP exporter for the same protocol, to the same receiver. bunny
with every job sampled is held to at least the peer, while carrying its DNS and job spans
(four spans per job against the peer's two).

**DNS.** bunny resolves relay's name through the lab DNS server
(`lab/bench/zone.py`, the lab's ZoneServer in a process of its own), with its
default `family any` (an A and an AAAA query per lookup; the zone has only A records).
*cached*: the answer has a 300 s TTL, so jobs are answered from bunny's cache. *every job*:
TTL 0, so no cache may keep it and every job looks the name up; lookups of the same name in
flight at the same moment share one (so DNS q/job is below 2).

**Store.** *memory* is `relay serve --store memory`; *sqlite store* is relay's default
durable store (SQLite in a fresh `--state-dir`).

**ghz** (pinned in `tools/install.sh`) is the outside reference: a Go load generator against
relay's `Run` and `RunStream` and against the raw servicer, one connection, the same number of
calls in flight. It gets the proto from relay's server reflection, but by the service name:
ghz itself asks reflection for the method symbol, which grpc-python does not resolve
(grpc/grpc#34743, bojand/ghz#419). For `RunStream` ghz cannot keep *N* jobs in flight on a
stream; it runs one stream at a time carrying *N* jobs, so its stream figures are a batch
pattern, not bunny's, and it reports no per-job latency for them.

**The DNS benchmark** (`lab/bench/dnsbench.py`) asks CoreDNS (the pinned build,
its `template` plugin answering the bench zone; `lab/bench/zone.py`) for A
records only, one question per lookup. *cached*: the same name again and again (bunny's
cache, c-ares' query cache, a `dns.resolver.Cache`). *uncached*: every lookup asks a name no
one asked before (a fresh resolver per method and distinct names), since c-ares keeps a
cache of its own per channel. Latency is one lookup at a time; lookups/s and CPU per lookup
with 32 lookups in flight. CoreDNS answers on every core, so it is not what limits
lookups/s, though it shares the two cores with the client: CPU per lookup compares the
clients most fairly. getaddrinfo goes through the system resolver (glibc, nsswitch), which
cannot be pointed at another server;
it is measured for `localhost` from /etc/hosts only, as the floor of a thread-pool lookup.

**Load.** This is a shared 2-core machine unless the settings say otherwise: the load
average before and after the run, and at the end of each case (*load 1m*; the benchmark's
own client and server account for about 2 of it), says how busy it was.
Ratios taken within one round hold up better than absolute figures, but a busy machine blurs
them too: a wide range of a case's ratios says so. Rerun when the load was high.
"""

WHERE_TIME_GOES = """\
What the profiles (py-spy, cProfile), the table above and the floor say, and what was done
about it:

- **Keeping, alone.** The *unsampled* rows time a job the head sampler drops (a ratio of
  0; relay's caller says not sampled) with the providers bunny and relay build when they
  export spans, keeping off and then on with its default threshold, in processes of their
  own. Their difference is what keeping what went wrong costs a job that went well,
  measured where two processes sharing two cores cannot blur it: keeping is a few percent
  of a stream job, at the edge of the 5 % the target allows; the side-by-side rows above
  hold it to that target.
- **The floor.** The floor rows are the raw pair with nothing added but W3C trace context
  and the `rpc.*.duration` histograms (and at 100 % one CLIENT and one SERVER span), each
  done the way bunny and relay do it. With tracing off it adds, per job, measured alone
  (`python -m lab.bench.costs --group sdk`): the unsampled span on each side (about 4 µs),
  the context's inject (about 2.5 µs) and extract (about 5 µs), and one histogram point on
  each side. The SDK's `Histogram.record` costs about 9 µs a point (cProfile: about 30 %
  cleaning the attributes into a `Measurement` on every call, about 27 % matching views
  again); `bunnyrelay.histograms.HotHistogram` records one for about 0.15 µs: a list
  append under a key the caller already has, folded into bucket counts, sum, min and max
  in batches, its points merged into the batches the OTLP exporter is handed (the Python
  SDK has no metric producer and the API no observable histogram). What is gRPC's own of
  the floor is the *traceparent* row: the raw pair sending the same header, made once,
  with nothing else. grpc.aio copies any metadata that is not a `grpc.aio.Metadata` into
  one on every call (about 1.8 µs of Python for one header), so bunny, the floor and that
  row hand it a `grpc.aio.Metadata`.
- **Instructions, not time.** On a busy machine CPU µs per job swing with the load, so the
  unary rows were also counted in instructions (callgrind; client and server in one
  process on loopback, 64 in flight, the difference of a 1,300- and a 300-job run, tracing
  off), which a busy machine does not change: the raw pair takes about 755,000 per job,
  the same header made once about 27,000 more (3.5 %), a new traceparent on every call, as
  an instrumented client sends, about 33,000 more (4.4 %: gRPC's own share of the floor,
  which alone holds it to about 0.96x raw), the floor about 195,000 more, and bunny against
  relay about 129,000 more than the floor. Their ratios match the table's (the floor over
  bunny, 0.85x in both before the changes below). Counting Python calls per job in the
  same set-up (400 for the raw pair, 552 for the floor, 643 for bunny and relay) puts the
  floor's cost in the OpenTelemetry calls themselves (spans, context, inject, extract), not
  in threads: the span processor's and the metric reader's threads sleep through the run,
  and the floor server's collections take about 3.5 µs per job against the raw one's 1.3.
  The per-piece timings above are taken in a tight loop, where that code stays in the
  CPU's caches; between gRPC's callbacks it does not, and costs several times as much.
- **Fixed, per call:** grpc.aio's server keeps one task waiting per method registered with
  it and, after every call of any method, waits on all of them again (`asyncio.wait`):
  relay registered health and reflection by method too (nine tasks against the raw
  server's four), so every job paid for them; they are now found through their generic
  handlers only (about 44,000 instructions a job less). The caller's context is read with
  `relay.callcontext.caller_context` (one walk of the metadata and one anchored match for a
  plain version-00 header; the global propagator for anything else, about 19,000
  instructions less than `extract`), and bunny and the floor write theirs with
  `bunnyrelay.w3cheaders.inject_headers` (about 5,000 less than `inject`): both give what
  the propagators would, and tests hold them to it.
- **The peer.** `opentelemetry-instrumentation-grpc` makes the same two spans per call as
  the floor at 100 % (plus its own attributes, made current with `start_as_current_span`
  and, on the server, a second generator-based context manager) and exports them with the
  SDK's encoder, which costs about three times `bunnyrelay.otlpencode`'s per span
  (`python -m lab.bench.otlpexport`: 32 against 11 µs over OTLP/gRPC, 36 against 12 µs
  over http/protobuf, transport included). bunny at 100 % makes four spans per job (its
  job span, its CLIENT span, relay's SERVER and job spans) and is held to at least the
  peer.
- **http/protobuf.** Both OTLP exporters have encoded spans with `bunnyrelay.otlpencode`
  since the encoder became a plug-in for either protocol: over http/protobuf only the
  transport differs (`requests` on the export thread instead of a gRPC channel), about
  1 µs per span more. The *OTLP http* rows are each measured next to their OTLP/gRPC
  twin, after it in odd rounds and before it in even ones.
- **Garbage collection.** bunny's youngest-generation collections (gc callbacks timing
  each, with the young objects listed at its start; every job sampled) take about 0.2 ms
  each, about 9 µs per job, for about 2,100 young objects, not 700: spans live until the
  export thread has sent them, so they die old, and each old object freed lowers the
  young generation's count, letting it hold more before a collection. Those young
  objects are the SDK's span objects (tuples, locks, deques, bounded lists and span
  contexts: about ten tracked objects per span), each walked once, at about 0.1 µs each.
  The one young *large* object was the encoder's own cache of encoded attribute pairs (an
  `lru_cache` dict of about 4,000 entries): a collection untracked its tuple keys and then
  the dict, and the next new pair (a job id is new on every span) put the whole dict back
  among the young objects for the next collection to walk. It is now a pair of plain dicts
  per key, which the collector never tracks, and a key whose values never repeat stops
  being cached (a test checks that no young object with thousands of referents is left).
  The rest of the cost scales with the spans made, not with a single object.
- **gRPC itself is most of every job.** Over half of relay's samples are inside gRPC's
  callbacks (the C core and grpc.aio's completion-queue hand-over to asyncio), the same
  work the raw baseline does. Between the floor and bunny's rows is bunny's and relay's
  own Python per job: checks, the idempotency store, retries, deadlines, and the job
  spans (`job.submit`, relay's `job <kind>`) that the floor does not make.
- **Fixed:** the SDK's `Counter.add` per job (attributes cleaned and hashed on every call)
  became a `bunnyrelay.tally.Tally` (a dict increment; the SDK reads the totals when it
  collects), and every per-job and per-call `Histogram.record` a
  `bunnyrelay.histograms.HotHistogram` (the same points, exported as the SDK's);
  `rpc.client.duration` is recorded per stream call, as the conventions define it, not
  per job of a stream; an unsampled job makes no span that would only be dropped, in
  bunny (its CLIENT span) or in relay (under a parent-based sampler); both OTLP exporters
  (gRPC and HTTP) encode spans with `bunnyrelay.otlpencode` (the same bytes, a third to a
  fifth of the CPU) where the installed SDK is a release it was checked against, and with
  the SDK's own encoder elsewhere; a pool with one address does not ask gRPC for its
  channel's state per job.
- **Streams:** one job per message pays gRPC's per-message cost (a write, a read, a
  completion hand-over on each side) per job. `RunBatches` shares it among the jobs of a
  batch; batches are capped at a quarter of the jobs in flight, because one batch of all
  of them makes bunny and relay take turns instead of working at once. With tracing on,
  each job's spans cost the same as a unary job's, and they are what a stream is left
  with once gRPC's share is divided among a batch.
- **Tracing at 100 %:** four spans per job (bunny's `job.submit` and CLIENT span, relay's
  SERVER and job spans). Each costs the SDK's span creation (about 16 µs start + end,
  measured alone), its encoding (about 11 µs) and the export thread's share. On a stream
  at 100 % (py-spy, 250 Hz, both sides): in relay, `Tracer.start_span` is about 19 % of
  the samples and the export thread about 19 % (encoding 9 %); in bunny, the job's CLIENT
  span's start is about 9 %, the export thread about 9 %, gRPC's stream writes about 12 %.
  Once a batch shares gRPC's per-message cost, the spans are most of what a streamed job
  costs, which is why every job sampled on a stream stayed near raw unary's rate.
  bunny's and relay's sampled spans are now light ones (`bunnyrelay.keeping.SampledSpan`,
  the keeping provider's, keeping on or off, wherever spans are exported): a few slots
  while the span runs, its attributes checked once when it ends (kept as they are when
  they are plain values within the `OTEL_*` span limits, the SDK's `BoundedAttributes`
  otherwise), and one `ReadableSpan` handed to the processors, as the SDK's span hands
  them; the sampler is asked once per root, not again by the SDK, and not about a child
  of a sampled span when it could only say yes. Measured alone (`python -m
  lab.bench.costs --group sdk`) a sampled span's start and end cost about a third of
  the SDK's (8.2 against 22.6 µs on a busy machine). It is used where the installed SDK
  is a release it was checked against and no span processor looks at spans as they start
  (such a processor gets the SDK's spans). Counted in instructions (`python -m
  lab.bench.instructions --jobs 100,400`: callgrind, bunny and relay in one process,
  every job sampled, spans encoded as the OTLP exporter encodes them, the difference of
  a 100- and a 400-job run), a unary job took about 2,291,000 instructions on both
  sides before and 1,612,000 after (-30 %), a streamed job 1,648,000 before and 984,000
  after (-40 %). With tracing off (`--sampler always_off`) the same jobs take 1,024,000
  and 386,000: what every job sampled adds (four spans, their context, their encoding
  and the export thread) went from about 1,265,000 to 595,000 instructions a job, on
  either path. Then the sampled span's path from start to export (same count,
  `--jobs 100,400`): a streamed job 912,000 before and 708,000 after (-22 %), a unary
  job 1,564,000 and 1,371,000 (-12 %). A streamed job with tracing off counted 327,000
  then, so what every job sampled adds to it went from about 585,000 to 384,000
  (-34 %). Of that, the export thread's share (callgrind per thread) went from about
  314,000 to 169,000 (about 79,000 to 42,000 per span): the encoder reads a plain
  `ReadableSpan`'s fields rather than calling a property for each (a mapping proxy and
  a copy for the attributes, tuples for events and links), and OTLP/gRPC sends its
  bytes as they are instead of parsing them into a request for the stub to serialize
  again. On the event loop: an ended sampled span goes straight to a lone batch
  processor's queue, a root of `always_on` or `parentbased_always_on` and a child of a
  light sampled span are started without asking the sampler (it would say yes and add
  nothing), and relay's job span does not look twice at a light sampled parent.
- **DNS:** aiodns 4 gives each channel a c-ares event thread; its hand-over to the event
  loop (channel lock, GIL, self-pipe) costs bunny's resolver more CPU than the query, so
  bunny runs aiodns in its socket-callback mode on the event loop. Measured in one process
  with 32 lookups in flight: bare aiodns alone is a little cheaper in its thread mode
  (36-40 against 45-48 µs CPU per lookup), but bunny's resolver in that mode costs about
  1.3x the CPU (the thread's callbacks wait for the GIL behind the resolver's own work).
  The first caller of a name runs the lookup in its own task (a task of its own and the
  shield around it cost two more passes of the event loop, a third of an uncached lookup's
  latency), and a lookup that one query answered carries that query on its `dns.lookup`
  span rather than a `dns.query` child. Every uncached row sends the same query: one A
  question for a name with enough dots (bunny with `family=ipv4` and no search list, so
  one candidate), and every row waits the same way (one at a time for latency, 32 in
  flight for CPU). The floor (aiodns on the loop as bunny runs it, one exported span, the
  histogram) is itself at 1.0-1.8x bare aiodns' latency depending on the machine's load; a
  traced lookup costs about 1.8-1.9x the floor's CPU. Beyond the floor it pays (py-spy,
  and an in-process run with c-ares answering from a done future): the span's nine
  attributes (about 9 µs: the SDK checks each value on `set_attributes`, so they are set
  in one call), their encoding on the export thread (about 10 µs), making the span current
  (about 3 µs), two more histogram points and the lookup counter (about 1 µs since they
  became `HotHistogram` and `Tally`; the SDK's `Histogram.record` cost about 10 µs each),
  and the resolver's own steps (cache, coalescing, candidates, answer checks, c-ares
  ledger, retry bookkeeping, a `Resolution`: about 20 µs, spread over a dozen small steps
  with none above 3 µs). A lookup answered from the wire hands its answer back first: its
  span (ended as of that moment) and its metrics are finished on the event loop's next
  pass, which the caller's next wait gives it (a job's RPC, the next lookup's query): they
  cost the same CPU (in one process about a quarter of a traced lookup's) but run while
  the caller waits on the network rather than before it has its answer; a failed lookup's
  telemetry is still complete before its caller sees the error, and one that never waited
  (a cache hit, a stale answer) finishes at once. With 32 in flight, py-spy finds the
  loop's calls into c-ares (each gives up the GIL) taking several times as long in the
  traced run as in the floor's: the export thread, busier with the larger spans, holds the
  GIL meanwhile, so wall time per lookup grows more than CPU does; the loop now asks
  c-ares for its next timeout only when the tick could be late, not on every query. The
  CPU target is taken against the floor's CPU per lookup in the same round. Counted in
  instructions (`python -m lab.bench.dnscount` under callgrind: one process, c-ares
  replaced by a future the loop settles, spans encoded as the exporter would, the
  difference between 1,000 and 3,000 lookups): the floor about 212k per lookup, a traced
  lookup about 427k (258k and 469k before the encoder's latest changes, and the traced
  lookup 511k before its records became named tuples, 569k before a lone candidate that is
  the name itself was left off the span and a one-address answer's attribute pair was
  encoded once and kept). A frozen dataclass sets each field through `object.__setattr__`:
  a `Resolution` cost about 11.5k instructions to make and a `DnsQuery` about 18k, a named
  tuple about 3.6k (7.9k when made with keywords), and a lookup makes a query, an answer
  and two resolutions (its own and the cache's). Of what is left, the SDK's
  `set_attributes` with the seven attributes after the name takes about 63k alone (it
  checks every value, the answers' tuple through `collections.abc.Sequence`), making the
  span current about 7.5k, the metrics beyond the floor's histogram about 12k, and the
  resolver's own steps most of the rest: with tracing off a lookup is about 203k (246k
  before) against bare aiodns' 36k, a non-recording span included, spread over some thirty
  small steps of 1-4k each (checking the name, candidates, cache and negative cache, the
  c-ares ledger and its settling, judging the answer, the records, five coroutines). With
  bunny's own tracer provider (`--provider bunny`, what bunny's command line makes: light
  sampled spans, their attributes checked once as they end) the floor is about 108k and a
  traced lookup about 270k (158k and 328k before the encoder's latest changes, the lookup
  371k before its named tuples). The DNS benchmark's bunny rows trace through that
  provider, as bunny runs, and its floor through the SDK's, as the job benchmark's floor
  does: counted so, a traced lookup is about 270k against the floor's 212k, 1.27x. With
  every name new, as in the benchmark, each
  lookup leaves a cache entry, a c-ares ledger entry and its span awaiting export alive:
  the cache now keeps one object per name (its `Resolution`; the state of a failed refresh
  only for the names that have one) and the ledger a tuple of numbers the collector stops
  tracking the first time it sees it, so the older collections traverse two objects less
  per name kept; the young collections are as many as before (about 27 per 1,000 traced
  lookups against the floor's 16, gc callbacks in one process). Of the span's nine
  attributes, OpenTelemetry's conventions name `dns.question.name` and `dns.answers`
  (`error.type` on a failure); the others are bunny's (`bunnyrelay.dns.*`) and stay, since
  the trace must say which nameserver answered, from where, and with how many queries.
- **Small choices in the code, and what each saves** (the comments beside them keep only
  the reason):
  - spans are started with `start_span` and made current with `context.attach` rather
    than `start_as_current_span`, whose two generator-based context managers cost more
    than a cache hit and a noticeable part of a job (bunny's `job.submit`, CLIENT and
    `dns.lookup` spans; relay's spans);
  - a job whose address comes from bunny's cache has no `dns.lookup` span: the span and
    its histogram entry cost about 35 µs, the hit about 0.15 µs; its `job.submit` span
    tells the answer instead, from attributes built once per answer;
  - the resolver's cache-hit path (`Resolver.cached`) is a closure chosen once (with or
    without a hosts file), and a hit returns the stored `Resolution`; with a hosts file
    it adds a clock comparison and a dict lookup, about 0.1 µs;
  - a `Resolution` for a hit is built directly: `dataclasses.replace` costs several times
    more;
  - bunny's answer cache, once full (4,096 names), drops its oldest sixteenth at a time:
    finding a dict's first key walks past the slots of every key deleted before it, so
    dropping one entry per new name made a store at the bound cost about 4.4 µs, against
    1.7 µs in batches (measured alone, on a busy machine); an entry keeps only the answer
    it serves (a stale answer is made from it), not the one that came in with its queries;
  - addresses in answers are checked with `inet_pton`/`inet_ntop` rather than `ipaddress`:
    the same verdict for less than a tenth of the cost;
  - the retry machinery (tenacity) is entered only after a first attempt failed, so a job
    or query that succeeds at once pays nothing for it;
  - with tracing off, bunny's and relay's own steps of a job were taken call by call
    (callgrind, one process, gRPC taken out, 64 in flight, tracing off): bunny makes a
    job's first attempt in the submitter's own coroutine (no attempt closure, no retry
    coroutine, the unary call itself the attempt), follows its pool's addresses only when
    the answer changed, and on a stream wakes its writer and forgets a job only when there
    is something to do; relay awaits the handler in the job's own coroutine, reads each
    field of a request once (the checks hand them on), checks the log level once per job,
    and a stream's job task takes itself out of its session (no done callback to
    schedule). bunny's unary job went from about 169k to 160k instructions (the floor's
    client 102k), relay's `Run` from about 155k to 149k (the floor's server 76k), and on a
    stream (a stand-in call's own work included) bunny's job from about 248k to 227k and
    relay's from about 198k to 182k; what is left over the floor is mostly per-job
    work the floor does not do at all: relay's request checks, the idempotency store's
    fingerprint, claim and stored result, the result's timings, and the job counters and
    duration on both sides;
  - with tracing off, a whole unary job (bunny and relay in one process over real gRPC on loopback,
    64 in flight, `python -m lab.bench.instructions --modes floor,unary --sampler always_off`, two
    runs each) went from about 1,026k and 1,029k to 975k and 984k instructions, against the floor's
    910k counted the same way (0.89x to 0.93x of the floor): bunny makes a job's root span itself
    when the sampler can only drop it (`bunny.droppedroots`: the ids and flags the SDK would give
    it, without the sampler's result and the tracer's checks), writes an unsampled attempt's
    `traceparent` from the job's span context it already holds (`w3cheaders.span_headers`), both
    sides key their RPC duration by the status code's number (`grpc.StatusCode` is an Enum, whose
    hash is a Python call), and relay's fingerprint starts from a copy of its kind's hash state.
    `gc.freeze()` after start-up was measured and left out: in an 8 s `bunny bench` against a relay
    (about 12,000 jobs, tracing off) relay ran one full collection (14 ms of CPU) and bunny none.
    Most young collections on relay's side free gRPC's own per-call cycle (its method lookup's
    closure and call details), which the raw and floor servers make too;
  - keeping what went wrong (the 10 % rows) costs an unsampled job about 12k instructions
    more than plain head sampling, of about 200k for bunny's whole job with gRPC taken out
    (callgrind, one process, unary and stream alike; it was about 37k): the keeping tracer
    asks the head sampler about a root itself, so a dropped root is a light one with no SDK
    span made and thrown away first; an RPC attempt is noted on its own record, its
    `traceparent` written from the two ids (`w3cheaders.inject_child_headers`) rather than
    injected and patched; a successful job's attributes are set in one call; and a local
    root does not refer to itself, so it is freed when its job lets go, not left to the
    cycle collector. A call's metadata is built only when a call takes it: a job on a
    stream reads its two W3C headers from a plain dict. relay's span-less path for an
    unsampled job costs the same instructions with keeping on or off.
  - a job the head sampler does not sample, at a ratio (`parentbased_traceidratio`), costs
    about what a job costs with tracing off. Counted with every job unsampled
    (`python -m lab.bench.instructions --sampler parentbased_traceidratio --sampler-arg 0
    --keep-slower-than 0`, and `3600` for keeping on: a threshold callgrind's slowness cannot
    reach), a stream job went from about 365k to 335k-340k instructions (tracing off: 314k-320k)
    and a unary one from about 1,032k to 986k-991k (tracing off: 990k); with keeping on from
    388k to 352k (stream) and from 1,054k to 1,020k (unary). In Python calls a job over tracing
    off (cProfile, the same every run): stream 47 to 8 (keeping on 56 to 18), unary 74 to 14
    (keeping on 101 to 37). What went: the SDK's ratio sampler is not asked about a root it
    would drop (the keeping tracer compares the trace id's low 64 bits with its bound, as the
    sampler does; a root under the bound, and every other sampler, is asked as before); relay
    reads a caller's sampled flag as it parses the `traceparent` (`relay.callcontext`'s
    `caller_parent`, `job_parent`) instead of looking the span up in the context again, and a
    unary call under an unsampled caller tells its job so; a noted attempt's headers read its
    job's context once. At 10 % a stream job went from about 420k to 396k (keeping off) and
    from 437k to 391k (keeping on): what is left over tracing off is mostly the sampled tenth.
    Stream counts move by about 5k between identical runs (how jobs share a batch follows
    timing);
  - the same holds in the two real processes of the stream case: counted with callgrind on
    each (both zeroed and dumped at bunny's window marks, 64 in flight, the slow threshold
    raised to an hour so that valgrind's own slowness keeps nothing), bunny took about 305k
    to 307k instructions a job with keeping off and 305k to 319k with it on, relay about
    241k to 247k either way. What differs more between the 10 % rows is CPU time per
    instruction: on a shared machine the same relay, doing the same work, took 55 to 106
    µs of CPU a job within one minute. The keeping rows' jobs/s ratio reads that noise,
    not keeping: two rows a few percent apart need many rounds to be told apart.
  - what keeping added to bunny's side of an unsampled job was mostly work for a trace that is
    forgotten: the noted attempt's name and eight RPC attributes were looked up, and the
    job's end attributes copied into its root, for every job, though only a kept trace
    reads them. Now a noted attempt records its ids, times and status, and is described
    (`AttemptRecord.describe`) only when its trace is kept; a root that ends well is ended
    with its attributes in one call (`LocalRoot.end_with`, now `end_well`), which sets them
    only if the trace is judged. With every job unsampled, a stream job (both sides in one process,
    `python -m lab.bench.instructions --modes stream --sampler parentbased_traceidratio
    --sampler-arg 0 --keep-slower-than 0`, then `3600`, then `--sampler always_off`) went
    from 321k to 311k instructions with keeping off, from 343k to 332k with it on, and from
    318k to 306k with tracing off. In the bench's own rounds (`--cases
    stream-10-plain,stream-10 --rounds 8 --duration 5`, the same minutes, one tree after the
    other) keeping on against off went from 0.89x (0.83-0.99) of the jobs/s, bunny's CPU a
    job 88 against 75 µs, to 0.96x (0.82-1.07), 78 against 72 µs. Every `traceparent`, a
    job's trace id and a job id are now written from the ids' bytes (`int.to_bytes(...).hex()`,
    `w3cheaders.trace_id_hex`) rather than through a format spec parsed on every call: a
    `traceparent` took 1.2 µs and takes 0.66 µs; and an attempt writes its job's context from
    the span it made current rather than looking that span up again.
  - measured again over more rounds on the AMD EPYC host (`--cases
    unary-10-plain,unary-10,stream-10-plain,stream-10 --rounds 12 --duration 5`): keeping on
    against off 0.98x (0.86-1.60) of the jobs/s unary and 0.92x (0.78-1.03) on a stream;
    bunny's CPU a job 424 against 428 µs unary and 94 against 84 µs on a stream, relay's 83
    against 81. A stream message carried the same number of jobs with keeping on and off
    (14.0-14.5 in each of eight runs, counted as bunny's stream takes its next batch), so
    the stream's gap is not a change in how jobs share a message; bunny's CPU per streamed
    job moved between 71 and 105 µs from round to round of the same case, falling as the
    rate rose. What keeping costs bunny's side of an unsampled streamed job, about 2.5 µs
    counted alone, is 3-6 % of that job: at the edge of the 5 % the target allows.
    Twelve more pairs (December 6; relay on the memory store and `bunny bench --stream`
    in turn, keeping on and off, 64 in flight, 6 s after 1 s, the order alternating, CPU
    from /proc over 4 s of each): keeping on against off, median of the pairs' ratios
    1.00x (0.82-1.29), medians of the runs 8,854 against 9,276 jobs/s (0.95x); bunny's
    CPU a job 97.6 against 92.4 µs, relay's 88.1 against 89.2. In the same hour the same
    configuration ran from 7,700 to 13,570 jobs/s, the whole machine faster or slower
    by turns (bunny's and relay's CPU per job moved together, the jobs per message
    unchanged): four rounds cannot tell 0.95x from 0.98x here.
  - side by side (December 6, later: the bench's own two stream cases at the same time,
    each with its own relay and bunny, eight rounds of 5 s) the stream's keeping cost was
    plain to see: keeping on against off 0.958x (0.929-0.978), under 1 in every round,
    bunny's CPU a job about 5 µs more; two runs of the keeping-off case side by side read
    1.007x (0.962-1.050) of each other. What was cut: a root that ends well now ends in one
    call (`LocalRoot.end_well`), told nothing; its first noted attempt is held from its
    start in a slot of its own, not in a list made as it ends; what it notes (failed,
    retried, held, looked up) is one int; an attempt asks keeping first and looks nothing
    else up when it is noted. Python calls a job over keeping off: 11 to 6. Counted alone
    (bunny's job path with a noted attempt, keeping on against off, 16 rounds of 20,000
    jobs) keeping's extra went from 3.3 to 2.1 µs a job; in one process with a relay
    (`python -m lab.bench.instructions --run --mode stream --jobs 30000`, every job
    unsampled, six runs each, CPU from rusage) from +5.7 to +3.8 µs of about 113. Side by
    side after: 0.963x (0.942-0.996, ten rounds); in the `make bench` run of December 6 at
    13:57, 0.96x (0.94-1.03) on a stream and 0.98x (0.82-1.07) unary, bunny's memory the
    same with keeping on and off (58 and 53 MiB). bunny unary with tracing off, with its
    code from before this change and after it side by side (six rounds), read 1.01x
    (0.90-1.06): the change does not touch that path. bunny's code after the change against
    before, both keeping, side by side (eight rounds): 1.005x (0.966-1.079), bunny's CPU a
    job about 1 µs less, within what this method can tell. So the cut is small in jobs/s;
    what made the stream's target readable is measuring it side by side, where it read
    0.958x before the cut as well.
"""

# Measured on whole processes (10 runs after a warm-up, medians), not by `make bench`;
# kept here so that regenerating this file keeps it.
STARTUP = """\
## Start-up: `--help`

`bunny --help` (and each command's `--help`, and a bad flag) builds the parser from
`bunny.config` and loads nothing a command needs only to run: gRPC, OpenTelemetry,
tenacity, aiodns, asyncio and rich are imported after the flags are read
(`bunny.commands`), and a test checks that help loads none of them. Whole processes,
10 runs after a warm-up, medians, on this machine:

| command | before | after |
|---|---|---|
| `bunny --help` | 0.259 s wall, 48 MiB peak | 0.060 s wall, 15 MiB peak |
| `bunny submit --help` (resolve, diagnose, bench alike) | 0.254-0.266 s | 0.060-0.064 s |
| `relay serve --help` (its config loads gRPC and the OpenTelemetry SDK) | 0.220 s | 0.222 s |
| `python -c pass`, for the floor | 0.022 s | |

`bunny --help` paired in one run (before and after in turn), after/before: 0.26 of the
wall time (medians of 10 pairs; the machine is shared, so the absolute times drift).
"""

RELAY_CODE_NOTES = """\
## Measurements behind relay's code

Choices in relay's code that a measurement made; the code keeps the one-line reason.

- **Durable stores keep at most 10,000 results in memory** (`DURABLE_CACHE_MAX`,
  `relay/stores/base.py`). A result held in memory costs about 0.35 KB with a 100-byte
  payload, so the memory store's 100,000 would add some 35 MB to relay's 45, for reads
  (resubmissions of recent jobs) that rarely come: the durable store has them anyway.
- **A remembered result is one bytes object** (`RecentResults`, `relay/stores/memory.py`):
  the fingerprint followed by the serialized result. A parsed `JobResult` holds about
  1.8 KB of Python objects, and an object holding the fingerprint and the bytes apart
  about 100 bytes more than the one bytes object. Replays are rare next to completions,
  so the parse is paid on replay.
- **A result's timings are set in place** (`JobRunner._result`, `relay/runner.py`):
  building three `Timestamp`s and a `JobTimings` to copy in costs twice as much.
"""

RUNNING = """\
## Running it

    make bench                                   # 4 rounds (about 15 minutes); rewrites this file
    .venv/bin/python -m lab.bench --quick --no-write   # a smoke run, one round
    .venv/bin/python -m lab.bench --cases raw-unary,unary-100 --rounds 5 --no-dns
    .venv/bin/python -m lab.bench --json  # one JSON object for machines

`bunny bench` runs the bunny side alone against any relay (flags have `BUNNY_…` variables,
telemetry follows the `OTEL_…` ones):

    bunny bench --target relay.private.aws.internal:50051 --duration 30 --concurrency 64 \\
        [--stream] [--json]

To see where the time goes, sample both sides with py-spy (not a project dependency:
`pip install py-spy` into the venv) while `bunny bench` runs against a relay:

    py-spy record --rate 200 --format speedscope -o relay.json --pid RELAY_PID --duration 12 &
    py-spy record --rate 200 --format speedscope -o bunny.json -- \\
        .venv/bin/python -m bunny bench --target NAME:PORT --nameserver IP:PORT --duration 10
"""


_HAND_WRITTEN = re.compile(
    r"^<!-- (?P<name>[\w-]+): begin\b.*?-->$.*?^<!-- (?P=name): end -->$", re.M | re.S
)
"""A section of the file that another tool's run fills in by hand (``make fleet``'s), between
``<!-- NAME: begin ... -->`` and ``<!-- NAME: end -->`` lines."""


def hand_written_sections(document: str) -> str:
    """Every hand-written section of ``document``, in order, each ending with a newline."""
    return "".join(match.group(0) + "\n" for match in _HAND_WRITTEN.finditer(document))


def _verdict(met: object) -> str:
    if met is None:
        return "-"
    return "met" if met else "**missed**"


def markdown_document(
    settings: dict[str, Any],
    results: Sequence[CaseRounds],
    dns: dict[str, Any] | None,
    costs: dict[str, dict[str, float]] | None = None,
) -> str:
    """The whole of docs/benchmarks.md for one run."""
    machine = settings["machine"]
    packages = ", ".join(f"{name} {version}" for name, version in machine["packages"].items())
    before, after = settings["load_average_before"], settings["load_average_after"]
    # The run's own client and server keep about two cores busy: the load after it counts
    # them, so only what goes beyond them says that other work shared the machine.
    busy = before[0] > machine["cores"] / 2 or after[0] > machine["cores"] + 1
    parts = [
        "# Benchmarks",
        "",
        "<!-- Generated by `make bench` (lab/bench/writeup.py): edits are overwritten. -->",
        "",
        "bunny and relay measured against raw grpc.aio in the same run, and held to performance "
        "targets set as ratios to it: the results of the last run, then how they were measured.",
        "",
        "## Settings",
        "",
        f"- Run: {settings['started_at']}, {settings['wall_s']} s"
        + (" (**quick smoke run: the numbers mean nothing**)" if settings["quick"] else ""),
        f"- Machine: {machine['cores']} cores ({machine['cpu_model']}), Linux {machine['kernel']}",
        f"- Load average (1, 5, 15 min): {before} before, {after} after"
        + (" (**busy: other work shared the cores; read the ratios with care**)" if busy else ""),
        f"- Python {machine['python']}; {packages}",
        f"- ghz: {settings['ghz']}",
        f"- Each case: {settings['warmup_s']} s warm-up, {settings['duration_s']} s measured, "
        f"{settings['concurrency']} jobs in flight, {settings['payload_bytes']}-byte payloads",
        f"- Rounds: {settings['rounds']} (each case once per round, in the order of the table; "
        "in even rounds each case held to the one before it, an OTLP http case, runs just "
        "before its twin; the cases side by side run at the same time as theirs)",
        f"- relay: {settings['relay']}",
        f"- bunny: {settings['bunny']}",
        "",
        "## Results",
        "",
        markdown_table(results),
        "",
        "*x base*: against the raw grpc.aio case of the same mode in the same round (the median "
        "of the rounds, then their lowest and highest); ghz rows against ghz -> raw server. "
        "The last row is the baseline measured again at the end of each round.",
        "",
        "## Targets",
        "",
    ]
    target_rows = [
        (case.case.label, verdict.target.describe(), _target_result(verdict))
        for case in results
        for verdict in case.verdicts
    ]
    parts.append(markdown_rows(["case", "target", "measured (median of rounds)"], target_rows))
    parts.append("")
    parts += [*_floor_paragraph(results)]
    targets = [*relay_targets(results), *((dns or {}).get("targets") or [])]
    other = [(t["target"], t["goal"], target_value_text(t), _verdict(t["met"])) for t in targets]
    if other:
        parts += [markdown_rows(["what", "goal", "measured", ""], other), ""]
    if dns:
        rows = [
            (
                row["group"],
                row["method"],
                row["p50_us"],
                row["mean_us"],
                row["p99_us"],
                None if row["lookups_per_s"] is None else round(row["lookups_per_s"]),
                row["cpu_us_per_lookup"],
                row["failed"],
                row["note"] or " ",
            )
            for row in dns["rows"]
        ]
        parts += [
            "## DNS lookups",
            "",
            markdown_rows(
                [
                    "",
                    "method",
                    "p50 µs",
                    "mean µs",
                    "p99 µs",
                    "lookups/s",
                    "CPU µs/lookup",
                    "failed",
                    "note",
                ],
                rows,
            ),
            "",
            *(f"- {note}" for note in dns.get("notes") or ()),
            "",
        ]
    if costs:
        parts += [
            "## Where the time goes",
            "",
            "Each piece of a job's path timed alone, in one process "
            "(`python -m lab.bench.costs`), CPU µs per call:",
            "",
            markdown_rows(["what", "tracing", "CPU µs per call"], job_costs.rows(costs)),
            "",
            WHERE_TIME_GOES,
        ]
    parts += [STARTUP, METHOD, RELAY_CODE_NOTES, RUNNING]
    return "\n".join(parts).rstrip() + "\n"


def _floor_paragraph(results: Sequence[CaseRounds]) -> list[str]:
    """What the floor cases reached: no service with the conventions' telemetry can pass them."""
    by_key = {case.case.key: case.jobs_ratio for case in results}
    off, traced = by_key.get(FLOOR_OFF), by_key.get(FLOOR_TRACED)
    if off is None and traced is None:
        return []
    reached = [
        f"{ratio_text(spread)} {what}"
        for spread, what in (
            (off, "with tracing off"),
            (traced, "with two spans per call at 100 %"),
        )
        if spread is not None
    ]
    return [
        "**The floor.** The raw pair with nothing added but the telemetry this project's "
        "standards ask of every call (W3C trace context, the `rpc.*.duration` histograms and, "
        "when sampled, one CLIENT and one SERVER span: `lab/bench/floor.py`) reached "
        + " and ".join(reached)
        + " of raw unary in this run. The floor makes its spans with the SDK's own "
        "tracer, as any service does that uses the Python SDK as it comes; bunny and "
        "relay make sampled spans lighter (`bunnyrelay.keeping.SampledSpan`), so with "
        "tracing on they can pass it. With tracing off the gap between a bunny case and "
        "the floor is bunny's and relay's own.",
        "",
    ]


def _target_result(verdict: TargetVerdict) -> str:
    """The median per-round ratio, its range and whether the median meets the target."""
    if verdict.met is None:
        return target_measured(verdict)
    return f"{target_measured(verdict)}, {_verdict(verdict.met)}"
