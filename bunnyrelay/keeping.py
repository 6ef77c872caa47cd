"""Keeping the traces of jobs that went wrong, whatever the head sampler decided.

A head sampler (``OTEL_TRACES_SAMPLER=parentbased_traceidratio``) decides when a
job starts, before anything has failed: at 10 %, nine failed jobs in ten would
leave no trace. Here each process keeps its own side of such a job:

- :class:`KeepingTracerProvider` is the SDK's provider with the head sampler
  as it is; its tracers turn a span the head sampler drops into a
  :class:`LightSpan` instead of a non-recording one, when it is a trace's local
  root (a :class:`LocalRoot`: no parent, or, on relay, a remote parent whose flags
  say not sampled) or the child of a light span. A light span records what the code tells it,
  in a few slots, and carries the context the head sampler gave it (not
  sampled), so the W3C context sent to relay is unchanged. A child that
  nothing makes current (an RPC attempt) can be a :class:`NotedSpan`
  instead (:meth:`KeepingTracer.note_child`): fewer fields again, made a span
  only when its trace is kept.
- When a local root ends, its trace is exported if a span in it failed, was
  tried again, or the root took at least the threshold, with
  ``bunnyrelay.sampling.kept`` (``error``, ``retried``, ``slow``) on every span;
  otherwise it is forgotten. Kept spans become SDK spans whose context says
  sampled, handed to the export processor (the SDK's BatchSpanProcessor skips
  unsampled ones).

The spans the head sampler *samples* are light too (:class:`SampledSpan`), where the
installed SDK is a release this module was checked against (:data:`CHECKED_SDK_VERSIONS`)
and every span processor only looks at ended spans: a light span's few slots while it runs,
its attributes checked once when it ends (the span limits of the ``OTEL_*`` variables
applied as the SDK applies them), and one :class:`~opentelemetry.sdk.trace.ReadableSpan`
handed to the processors, as the SDK hands them its own. The sampler is not asked again
about a child of a sampled span when it would only say yes (the ``parentbased_*`` samplers
the ``OTEL_*`` variables choose). Elsewhere sampled spans are the SDK's own.

Why not the SDK's own RECORD_ONLY spans: each takes attribute limits, locks and every
span processor twice, several times a light span's cost, paid by every unsampled job;
a light span becomes an SDK span only when its trace is kept.

Memory is bounded. A trace is carried by its root, which the job holds: one that
is only a root and noted spans ends with its job, or is collected with it. Once a
light span starts under a root, the keeper holds the trace as well, so that the
spans of a job that never ends cannot pile up: at most ``max_waiting`` traces are
held (the oldest is given up for a new one) and, checked at most once a second as
traces are taken, none longer than ``max_age_s``; given-up traces are counted in
``bunnyrelay.sampling.dropped_traces``. A span that ends after its root is
exported when its trace was kept, and forgotten otherwise.
"""

from __future__ import annotations

import threading
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from importlib import metadata
from time import time_ns
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.context import Context, get_current
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import (
    Event,
    ReadableSpan,
    SpanLimits,
    SpanProcessor,
    SynchronousMultiSpanProcessor,
    TracerProvider,
)
from opentelemetry.sdk.trace import Tracer as SdkTracer
from opentelemetry.sdk.trace._tracer_metrics import NoOpTracerMetrics
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.id_generator import IdGenerator, RandomIdGenerator
from opentelemetry.sdk.trace.sampling import (
    Decision,
    ParentBased,
    Sampler,
    StaticSampler,
    TraceIdRatioBased,
)
from opentelemetry.sdk.util import BoundedList
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import (
    INVALID_SPAN,
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
)
from opentelemetry.util.types import Attributes, AttributeValue

from bunnyrelay import semconv
from bunnyrelay.keepsettings import KeepSettings

SCOPE = "bunnyrelay.keeping"

KEPT_ERROR = "error"
KEPT_RETRIED = "retried"
KEPT_SLOW = "slow"

DROPPED_CAP = "cap"
DROPPED_AGE = "age"

_NS = 1_000_000_000
_SWEEP_EVERY_NS = _NS
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_SAMPLED_RANDOM = TraceFlags(TraceFlags.SAMPLED | TraceFlags.RANDOM_TRACE_ID)
_UNSET = Status(StatusCode.UNSET)
# The bits of a trace id the SDK's ratio sampler compares with its bound.
_TRACE_ID_LIMIT = TraceIdRatioBased.TRACE_ID_LIMIT

CHECKED_SDK_VERSIONS = frozenset({"1.45.2"})
"""Releases of ``opentelemetry-sdk`` whose tracer, spans and processors :class:`SampledSpan`
was checked against (it stands in for the SDK's span and reads a few of its internals).
Checking one: install it, run ``pytest tests/bunnyrelay/test_sampledspans.py
tests/bunnyrelay/test_keeping.py``, then add it here."""

# Processors' hooks that do nothing: with only these, no processor looks at a span before it
# has ended, so a light span can stand in for the SDK's while it runs.
_QUIET_HOOKS = frozenset(
    {
        SpanProcessor.on_start,
        SpanProcessor._on_ending,
        BatchSpanProcessor.on_start,
        BatchSpanProcessor._on_ending,
        SimpleSpanProcessor.on_start,
        SimpleSpanProcessor._on_ending,
    }
)
# Attribute values kept as they are, once their type is seen (bool is not an int here).
_SCALARS = frozenset({bool, int, float})
_PLAIN_TYPES = _SCALARS | {str}
_PLAIN_OR_TUPLE = _PLAIN_TYPES | {tuple}
_KEY_TYPES = frozenset({str})
# Samplers that never start a trace of their own: whoever chose one wants nothing kept.
_NEVER_ROOTS = ("AlwaysOffSampler", "ParentBased{root:AlwaysOffSampler,")

# What became of a held trace.
_WAITING = 0
_KEPT = 1
_FORGOTTEN = 2

# What a local root notes of its trace as it runs (LocalRoot.marks), bits of one int: a job
# that went well has none, which one test tells.
_FAILED = 1
"""A span in the trace was set to ERROR."""
_RETRIED = 2
"""Something was tried again: an RPC attempt or a DNS query after the first, or a second
lookup."""
_HELD = 4
"""The keeper holds the trace (:meth:`Keeper.hold`)."""
_LOOKED_UP = 8
"""A lookup started under the root; a second one is a retry."""


def keeps_anything(head: Sampler) -> bool:
    """False for a sampler chosen to trace nothing (``always_off``, ``parentbased_always_off``)."""
    return not head.get_description().startswith(_NEVER_ROOTS)


class _HeldSpan(trace.Span):
    """What the spans of a dropped trace share: a name, a status and an end, and the trace's
    local root, which an ERROR status marks failed."""

    __slots__ = ("_end", "_name", "_root", "_status")

    _end: int | None
    _name: str
    _root: LocalRoot
    _status: Status

    def is_recording(self) -> bool:
        return self._end is None

    def update_name(self, name: str) -> None:
        if self._end is None:
            self._name = name

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        # As the SDK's spans: OK is final, and UNSET changes nothing.
        if self._end is not None or self._status.status_code is StatusCode.OK:
            return
        if isinstance(status, StatusCode):
            status = Status(status, description)
        if status.status_code is not StatusCode.UNSET:
            self._status = status
            if status.status_code is StatusCode.ERROR:
                self._failed()

    def _failed(self) -> None:
        """This span was just set to ERROR: its trace is one to keep."""
        self._root.marks |= _FAILED

    def _ended(self) -> None:
        """A span under the root has ended: held with its trace until the root is judged,
        exported now if the trace was kept already, forgotten if it was not."""
        root = self._root
        if root.state == _WAITING:
            if root.spans is None:
                root.spans = [self]
            else:
                root.spans.append(self)
        elif root.state == _KEPT:
            root._keeper.export_late(self, root.reason)

    def readable(self, reason: str, resource: Resource, limits: SpanLimits) -> ReadableSpan:
        raise NotImplementedError


class LightSpan(_HeldSpan):
    """A span the head sampler dropped, recorded cheaply until its trace is judged."""

    __slots__ = (
        "_attributes",
        "_context",
        "_events",
        "_keeper",
        "_kind",
        "_links",
        "_parent",
        "_scope",
        "_start",
    )

    def __init__(
        self,
        keeper: Keeper,
        root: LocalRoot,
        scope: InstrumentationScope,
        name: str,
        context: SpanContext,
        parent: SpanContext | None,
        kind: SpanKind,
        attributes: Attributes,
        links: Sequence[Link] | None,
        start_time: int,
    ) -> None:
        self._keeper = keeper
        self._root = root
        self._scope = scope
        self._name = name
        self._context = context
        self._parent = parent
        self._kind = kind
        # A copy: callers pass attribute dicts they keep and reuse.
        self._attributes: dict[str, AttributeValue] = dict(attributes) if attributes else {}
        self._links: list[Link] | None = list(links) if links else None
        self._events: list[Event] | None = None
        self._status = _UNSET
        self._start = start_time
        self._end: int | None = None

    def get_span_context(self) -> SpanContext:
        return self._context

    def set_attribute(self, key: str, value: AttributeValue) -> None:
        if self._end is None:
            self._attributes[key] = value

    def set_attributes(self, attributes: Mapping[str, AttributeValue]) -> None:
        if self._end is None:
            self._attributes.update(attributes)

    def add_event(
        self, name: str, attributes: Attributes = None, timestamp: int | None = None
    ) -> None:
        if self._end is None:
            if self._events is None:
                self._events = []
            self._events.append(Event(name, attributes, timestamp or time_ns()))

    def add_link(self, context: SpanContext, attributes: Attributes = None) -> None:
        if self._end is None and context.is_valid:
            if self._links is None:
                self._links = []
            self._links.append(Link(context, attributes))

    def record_exception(
        self,
        exception: BaseException,
        attributes: Attributes = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        if self._end is not None:
            return
        kind = type(exception)
        module = kind.__module__
        described: dict[str, AttributeValue] = {
            "exception.type": f"{module}.{kind.__qualname__}"
            if module and module != "builtins"
            else kind.__qualname__,
            "exception.message": str(exception),
            "exception.stacktrace": "".join(traceback.format_exception(exception)),
            "exception.escaped": str(escaped),
        }
        if attributes:
            described.update(attributes)
        self.add_event("exception", described, timestamp)

    def end(self, end_time: int | None = None) -> None:
        if self._end is not None:
            return
        self._end = end_time or time_ns()
        self._ended()

    def _child(
        self,
        scope: InstrumentationScope,
        new_span_id: Any,
        name: str,
        kind: SpanKind,
        attributes: Attributes,
        links: Sequence[Link] | None,
        start_time: int | None,
    ) -> trace.Span:
        """A span under this one, in the same trace, which the keeper now holds."""
        root = self._root
        state = root.state
        if state == _FORGOTTEN:
            # Given up: the rest of the trace is not held either.
            return NonRecordingSpan(self._context)
        started = start_time or time_ns()
        if state == _WAITING and not root.marks & _HELD:
            self._keeper.hold(root, started)
        if name == semconv.SPAN_DNS_LOOKUP:
            root.marks |= _RETRIED if root.marks & _LOOKED_UP else _LOOKED_UP
        elif kind is SpanKind.CLIENT and attributes and _tried_again(attributes):
            root.marks |= _RETRIED
        context = self._context
        return LightSpan(
            self._keeper,
            root,
            scope,
            name,
            SpanContext(
                context.trace_id,
                new_span_id(),
                False,
                context.trace_flags,
                context.trace_state,
            ),
            context,
            kind,
            attributes,
            links,
            started,
        )

    def readable(self, reason: str, resource: Resource, limits: SpanLimits) -> ReadableSpan:
        """This span as an exporter takes it: sampled, saying why it was kept, and within
        the span limits (``OTEL_*``), as the SDK's span would have been."""
        context = self._context
        sampled = SpanContext(
            context.trace_id,
            context.span_id,
            context.is_remote,
            TraceFlags(context.trace_flags | _SAMPLED),
            context.trace_state,
        )
        return ReadableSpan(
            name=self._name,
            context=sampled,
            parent=self._parent,
            resource=resource,
            attributes=finished_attributes(
                {**self._attributes, semconv.SAMPLING_KEPT: reason}, limits
            ),
            events=_limited_events(self._events, limits),
            links=_limited_links(self._links, limits),
            kind=self._kind,
            status=self._status,
            start_time=self._start,
            end_time=self._end,
            instrumentation_scope=self._scope,
        )


class LocalRoot(LightSpan):
    """The local root of a trace the head sampler dropped, and the record of that trace:
    what judging it reads (``marks``, noted as its spans start and fail), its noted spans
    from their start and its light spans once they ended, until it ends itself and is
    judged (:meth:`end_well`, :meth:`end`).

    The trace lives as long as the job that holds its root: the keeper holds it as well,
    within its bounds, only once a span starts under the root
    (:meth:`Keeper.hold`). A job whose trace is its root and noted spans (an RPC attempt)
    costs the keeper nothing, and it is the common one.
    """

    __slots__ = ("marks", "noted", "reason", "spans", "state")

    reason: str
    """Why the trace was kept; set when it is (``state`` is ``_KEPT``), read only then."""

    def __init__(
        self,
        keeper: Keeper,
        scope: InstrumentationScope,
        name: str,
        context: SpanContext,
        parent: SpanContext | None,
        kind: SpanKind,
        attributes: Attributes,
        links: Sequence[Link] | None,
        start_time: int,
    ) -> None:
        # Every unsampled job makes one: its fields are set here rather than through
        # LightSpan.__init__, a call less. Not ``_root`` (the property below): a
        # reference to itself would leave every root to the garbage collector's cycle
        # search, never freed when its job lets go of it.
        self._keeper = keeper
        self._scope = scope
        self._name = name
        self._context = context
        self._parent = parent
        self._kind = kind
        self._attributes = dict(attributes) if attributes else {}
        self._links = list(links) if links else None
        self._events = None
        self._status = _UNSET
        self._start = start_time
        self._end = None
        # Its first noted span (an RPC attempt), from its start: most jobs have one, and
        # no list is made for it.
        self.noted: NotedSpan | None = None
        # The other spans under it: light ones that ended, in the order they did, and
        # noted ones from their start; None until there is one.
        self.spans: list[_HeldSpan] | None = None
        self.state = _WAITING
        self.marks = 0

    @property
    def _root(self) -> LocalRoot:  # type: ignore[override]  # read-only: a root is its own
        return self

    def end(self, end_time: int | None = None) -> None:
        if not self.end_well(end_time):
            self._end = end_time or time_ns()
            self._keeper.judge(self)

    def end_well(self, end_time: int | None = None) -> bool:
        """End this root, and True, when nothing in its trace went wrong and it was quick,
        or the keeper gave the trace up: nothing of it is exported. False, the root not
        ended, when its trace is to be judged: set what a kept root shows, then end it.

        For a job that went well, in one call: the common end of an unsampled job, whose
        attributes need not be set when, as most often, its trace is forgotten."""
        if self._end is not None:
            return True
        end = end_time or time_ns()
        if self.state == _WAITING and (
            self._status is not _UNSET
            or self.marks
            or end - self._start >= self._keeper.slower_than_ns
        ):
            return False
        # Not kept: before its end a trace is waiting or was given up, never kept. The
        # spans under it point at it: let go, so that it is freed when its job lets go.
        self._end = end
        self.state = _FORGOTTEN
        self.noted = None
        self.spans = None
        return True


def finished_attributes(
    attributes: dict[str, AttributeValue], limits: SpanLimits
) -> Mapping[str, AttributeValue]:
    """A span's ``attributes`` as it exports them. Most spans carry a few string, number or
    boolean values within every limit: those are checked in a few passes made in C and kept
    as they are. Anything else (too many, too long, a value of another type, a bad key) goes
    through the SDK's own ``BoundedAttributes``, which applies the span limits of the
    ``OTEL_*`` variables and cleans or drops what is not an attribute value, as the SDK's
    spans do."""
    count = limits.max_span_attributes
    length = limits.max_span_attribute_length
    if (
        (count is None or len(attributes) <= count)
        and "" not in attributes
        and _KEY_TYPES.issuperset(map(type, attributes))
    ):
        kinds = set(map(type, attributes.values()))
        if length is None:
            if kinds <= _PLAIN_TYPES:
                return attributes
            # Only the tuples (a lookup's answers) need a look, one call each.
            if kinds <= _PLAIN_OR_TUPLE and all(
                _plain_tuple(value, None) for value in attributes.values() if type(value) is tuple
            ):
                return attributes
        elif all(_kept_as_is(value, length) for value in attributes.values()):
            return attributes
    return BoundedAttributes(count, attributes, immutable=True, max_value_len=length)


def _kept_as_is(value: object, length: int | None) -> bool:
    """A value the SDK would keep unchanged: a string within ``length``, a number, a boolean,
    or a tuple of strings or of one of those."""
    kind = type(value)
    if kind is str:
        return length is None or len(value) <= length  # type: ignore[arg-type]
    if kind in _SCALARS:
        return True
    return kind is tuple and _plain_tuple(value, length)


def _plain_tuple(value: Any, length: int | None) -> bool:
    """A tuple of strings (each within ``length``) or of one scalar type: kept as it is."""
    if not value:
        return True
    first = type(value[0])
    if first is str:
        return all(type(item) is str and (length is None or len(item) <= length) for item in value)
    return first in _SCALARS and all(type(item) is first for item in value)


def _limited_event(
    name: str, attributes: Attributes, timestamp: int | None, limits: SpanLimits
) -> Event:
    """An event with its attributes within the event limits, as the SDK's span makes one."""
    return Event(
        name,
        BoundedAttributes(
            limits.max_event_attributes,
            attributes,
            immutable=True,
            max_value_len=limits.max_attribute_length,
        ),
        timestamp,
    )


def _limited_link(context: SpanContext, attributes: Attributes, limits: SpanLimits) -> Link:
    """A link with its attributes within the link limits, as the SDK's span makes one."""
    return Link(
        context,
        BoundedAttributes(
            limits.max_link_attributes,
            attributes,
            immutable=True,
            max_value_len=limits.max_attribute_length,
        ),
    )


def _limited_events(events: Sequence[Event] | None, limits: SpanLimits) -> Sequence[Event]:
    """A kept light span's events as the SDK's span would hold them: the newest
    ``max_events``, each within the event limits."""
    if not events:
        return ()
    return BoundedList.from_seq(
        limits.max_events,
        [_limited_event(e.name, e.attributes, e.timestamp, limits) for e in events],
    )


def _limited_links(links: Sequence[Link] | None, limits: SpanLimits) -> Sequence[Link]:
    """A kept light span's links as the SDK's span would hold them."""
    if not links:
        return ()
    return BoundedList.from_seq(
        limits.max_links, [_limited_link(link.context, link.attributes, limits) for link in links]
    )


class SampledSpan(LightSpan):
    """A span the head sampler sampled, recorded as a light span is while it runs, and handed
    to the span processors as one ``ReadableSpan`` when it ends.

    What the SDK's span does per span and this one does not: a lock, attribute values
    checked on every set (here once, at the end: :func:`finished_attributes`), bounded
    containers for events and links made up front, the processors' start hooks (only made
    when every processor's hooks do nothing: :class:`KeepingTracer`), a second object to
    hand over. Not locked: bunny and relay make and end their spans on their event loop.
    A value is read when the span ends, not when it is set: a list changed in between is
    exported as it is at the end (the SDK's span copies it when it is set).
    """

    __slots__ = ("_sink",)

    def __init__(
        self,
        sink: SampledSink,
        name: str,
        context: SpanContext,
        parent: SpanContext | None,
        kind: SpanKind,
        attributes: Attributes,
        start_time: int,
    ) -> None:
        self._sink = sink
        self._name = name
        self._context = context
        self._parent = parent
        self._kind = kind
        # A copy: callers pass attribute dicts they keep and reuse.
        self._attributes = dict(attributes) if attributes else {}
        self._links = None
        self._events = None
        self._status = _UNSET
        self._start = start_time
        self._end = None

    def _failed(self) -> None:
        # Sampled: exported whatever its status, with no local root to tell.
        pass

    def add_event(
        self, name: str, attributes: Attributes = None, timestamp: int | None = None
    ) -> None:
        if self._end is None:
            limits = self._sink.limits
            if self._events is None:
                self._events = BoundedList(limits.max_events)  # type: ignore[assignment]
            self._events.append(  # type: ignore[union-attr]  # just made
                _limited_event(name, attributes, timestamp or time_ns(), limits)
            )

    def add_link(self, context: SpanContext, attributes: Attributes = None) -> None:
        if self._end is None and (context.is_valid or attributes or context.trace_state):
            limits = self._sink.limits
            if self._links is None:
                self._links = BoundedList(limits.max_links)  # type: ignore[assignment]
            self._links.append(  # type: ignore[union-attr]  # just made
                _limited_link(context, attributes, limits)
            )

    def end(self, end_time: int | None = None) -> None:
        if self._end is not None:
            return
        end = self._end = end_time or time_ns()
        sink = self._sink
        readable = ReadableSpan(
            self._name,
            self._context,
            self._parent,
            sink.resource,
            finished_attributes(self._attributes, sink.limits),
            self._events or (),
            self._links or (),
            self._kind,
            sink.info,
            self._status,
            self._start,
            end,
            sink.scope,
        )
        if sink.processors._span_processors is sink.checked:
            sink.emit(readable)
        else:
            sink.on_end(readable)

    def __exit__(self, exc_type: Any, exc_val: Any, exc_tb: Any) -> None:
        # As the SDK's span used as a context manager: an exception is recorded and fails it.
        if exc_val is not None and self._end is None:
            self.record_exception(exc_val, escaped=True)
            self.set_status(Status(StatusCode.ERROR, f"{type(exc_val).__name__}: {exc_val}"))
        self.end()


class SampledSink:
    """Where a tracer's sampled spans go when they end, and what they carry from it.

    The processors, as the SDK's spans hand them an ended span: all of them, those of the
    moment the span ends. With the SDK's batch processor alone (what ``setup_telemetry``
    installs) a span goes straight to its queue: that processor's ``on_end`` only checks
    the sampled flag, which a sampled span has, and the processors around it only loop;
    four calls less per span. Looked at again whenever the processors change."""

    __slots__ = ("checked", "emit", "info", "limits", "processors", "resource", "scope")

    def __init__(self, tracer: SdkTracer) -> None:
        self.resource = tracer.resource
        self.limits = tracer._span_limits
        self.info = tracer.instrumentation_info
        self.scope = tracer._instrumentation_scope
        self.processors: SynchronousMultiSpanProcessor = tracer.span_processor  # type: ignore[assignment]
        self.checked: tuple[SpanProcessor, ...] | None = None
        self.emit: Callable[[ReadableSpan], None] = self.processors.on_end

    def on_end(self, span: ReadableSpan) -> None:
        """Hand ``span`` to the processors, looking again at which there are."""
        processors = self.processors._span_processors
        self.checked = processors
        self.emit = self.processors.on_end
        if len(processors) == 1 and type(processors[0]) is BatchSpanProcessor:
            self.emit = processors[0]._batch_processor.emit
        self.emit(span)


class NotedSpan(_HeldSpan):
    """A child of a light span that nothing makes current nor asks anything of while it runs
    (an RPC attempt): its start, end, attributes and status, a few fields until its trace is
    judged, and a span only when the trace is kept. Cheaper again than a light span, which
    a hot path pays for every unsampled job.

    Made by :meth:`KeepingTracer.note_child`, or noted into an object of a subclass the
    caller holds anyway (:meth:`KeepingTracer.note`), which saves making one at all; such a
    subclass can say what the span is (:meth:`describe`) only when its trace is kept."""

    __slots__ = ("_attributes", "_kind", "_parent", "_scope", "_set", "_start", "span_id")

    _attributes: Mapping[str, AttributeValue]
    _kind: SpanKind
    _parent: SpanContext
    _scope: InstrumentationScope
    _set: dict[str, AttributeValue] | None
    _start: int
    span_id: int

    def get_span_context(self) -> SpanContext:
        parent = self._parent
        return SpanContext(
            parent.trace_id, self.span_id, False, parent.trace_flags, parent.trace_state
        )

    def set_attribute(self, key: str, value: AttributeValue) -> None:
        if self._end is None:
            if self._set is None:
                self._set = {}
            self._set[key] = value

    def set_attributes(self, attributes: Mapping[str, AttributeValue]) -> None:
        if self._end is None:
            if self._set is None:
                self._set = {}
            self._set.update(attributes)

    def end_with(self, attributes: dict[str, AttributeValue]) -> None:
        """Set ``attributes`` and end, in one call. They are not copied: nothing is set on a
        span that has ended, so a caller may pass a dict it keeps for every span."""
        if self._end is not None:
            return
        if self._set is None:
            self._set = attributes
        else:
            self._set.update(attributes)
        self._end = time_ns()
        # _ended, written out: this runs once per unsampled job (an attempt that went well).
        root = self._root
        if root.state == _KEPT:
            root._keeper.export_late(self, root.reason)

    def add_event(
        self, name: str, attributes: Attributes = None, timestamp: int | None = None
    ) -> None:
        raise NotImplementedError("a noted span takes no events; start a light span instead")

    def add_link(self, context: SpanContext, attributes: Attributes = None) -> None:
        raise NotImplementedError("a noted span takes no links; start a light span instead")

    def record_exception(
        self,
        exception: BaseException,
        attributes: Attributes = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        raise NotImplementedError("a noted span takes no events; start a light span instead")

    def end(self, end_time: int | None = None) -> None:
        if self._end is not None:
            return
        self._end = end_time or time_ns()
        self._ended()

    def _ended(self) -> None:
        """Its trace holds it from its start (:meth:`KeepingTracer.note`): nothing to do
        unless the trace was kept before it ended, which exports it now."""
        root = self._root
        if root.state == _KEPT:
            root._keeper.export_late(self, root.reason)

    def describe(self) -> None:
        """Set what this span is (``_name``, ``_kind``, ``_attributes``, ``_scope``), for a
        subclass that did not set them when noted; nothing here, where they were."""

    def readable(self, reason: str, resource: Resource, limits: SpanLimits) -> ReadableSpan:
        """This span as an exporter takes it: sampled, saying why it was kept, and within
        the span limits."""
        self.describe()
        parent = self._parent
        return ReadableSpan(
            name=self._name,
            context=SpanContext(
                parent.trace_id,
                self.span_id,
                False,
                TraceFlags(parent.trace_flags | _SAMPLED),
                parent.trace_state,
            ),
            parent=parent,
            resource=resource,
            attributes=finished_attributes(
                {**self._attributes, **(self._set or {}), semconv.SAMPLING_KEPT: reason}, limits
            ),
            kind=self._kind,
            status=self._status,
            start_time=self._start,
            end_time=self._end,
            instrumentation_scope=self._scope,
        )


class Keeper:
    """Judges each dropped trace when its root ends, and holds, within bounds, the traces
    that have spans under their root."""

    def __init__(self, settings: KeepSettings, resource: Resource, limits: SpanLimits) -> None:
        self.resource = resource
        self.limits = limits
        """The provider's span limits, which a kept span is held to when it is exported."""
        self.slower_than_ns = int(settings.slower_than_s * _NS)
        """A job's local root at least this long is kept."""
        self._max_waiting = settings.max_waiting
        self._max_age_ns = int(settings.max_age_s * _NS)
        # Each held root with the time it was taken, oldest first: the first to give up. No
        # lock: each of its operations is one call the interpreter makes atomic, and a span
        # ends once. A plain dict keeps that order too, and costs less than an OrderedDict.
        self._waiting: dict[LocalRoot, int] = {}
        self._swept_ns = 0
        self._export: SpanProcessor | None = None
        self._kept: metrics.Counter | None = None
        self._dropped: metrics.Counter | None = None
        self._kept_attributes = {
            reason: {semconv.SAMPLING_KEPT: reason}
            for reason in (KEPT_ERROR, KEPT_RETRIED, KEPT_SLOW)
        }
        self._dropped_attributes = {
            reason: {semconv.SAMPLING_DROP_REASON: reason} for reason in (DROPPED_CAP, DROPPED_AGE)
        }

    def connect(self, export: SpanProcessor, meter: metrics.Meter) -> None:
        """Where kept spans go, and the meter of the counts; nothing is exported before."""
        self._kept = meter.create_counter(
            semconv.METRIC_SAMPLING_KEPT,
            unit="{trace}",
            description="Traces the head sampler dropped, exported because their job failed, "
            "was retried or was slow, by reason",
        )
        self._dropped = meter.create_counter(
            semconv.METRIC_SAMPLING_DROPPED,
            unit="{trace}",
            description="Traces the head sampler dropped, given up before their job ended "
            "(too many held, or held too long), by reason",
        )
        self._export = export

    @property
    def waiting(self) -> int:
        """Traces held now."""
        return len(self._waiting)

    def hold(self, root: LocalRoot, now_ns: int) -> None:
        """Hold ``root``'s trace from now until it is judged, room made for it."""
        waiting = self._waiting
        if len(waiting) >= self._max_waiting:
            self._give_up(DROPPED_CAP)
        if now_ns - self._swept_ns > _SWEEP_EVERY_NS:
            self._swept_ns = now_ns
            too_old = now_ns - self._max_age_ns
            while waiting and next(iter(waiting.values())) < too_old:
                self._give_up(DROPPED_AGE)
        waiting[root] = now_ns
        root.marks |= _HELD

    def _give_up(self, reason: str) -> None:
        """Forget the oldest trace held."""
        waiting = self._waiting
        if not waiting:
            return
        root = next(iter(waiting))
        del waiting[root]
        root.marks &= ~_HELD
        root.state = _FORGOTTEN
        root.noted = None
        root.spans = None
        if self._dropped is not None:
            self._dropped.add(1, self._dropped_attributes[reason])

    def judge(self, root: LocalRoot) -> None:
        """``root`` has ended: export its trace if something in it went wrong, else forget it."""
        if root.marks & _HELD:
            self._waiting.pop(root, None)
            root.marks &= ~_HELD
        noted = root.noted
        spans = root.spans or ()
        # The spans and their root point at each other: let go here, so that none waits
        # for the garbage collector's cycle search, which every unsampled job would feed.
        root.noted = None
        root.spans = None
        reason = self._why_keep(root)
        if reason is None:
            root.state = _FORGOTTEN
            return
        root.state = _KEPT
        root.reason = reason
        if self._kept is not None:
            self._kept.add(1, self._kept_attributes[reason])
        if self._export is not None:
            on_end = self._export.on_end
            resource = self.resource
            limits = self.limits
            # A noted span still running is exported when it ends (NotedSpan._ended).
            if noted is not None and noted._end is not None:
                on_end(noted.readable(reason, resource, limits))
            for each in spans:
                if each._end is not None:
                    on_end(each.readable(reason, resource, limits))
            on_end(root.readable(reason, resource, limits))

    def export_late(self, span: _HeldSpan, reason: str) -> None:
        """A span of a kept trace that ended after its root."""
        if self._export is not None:
            self._export.on_end(span.readable(reason, self.resource, self.limits))

    def _why_keep(self, root: LocalRoot) -> str | None:
        """``error`` when the root failed, else ``retried`` when anything was tried again,
        else ``error`` when anything else failed, else ``slow`` for a slow root."""
        if root._status.status_code is StatusCode.ERROR:
            return KEPT_ERROR
        if root.marks & _RETRIED:
            return KEPT_RETRIED
        if root.marks & _FAILED:
            return KEPT_ERROR
        if (root._end or 0) - root._start >= self.slower_than_ns:
            return KEPT_SLOW
        return None


# The spans under which a span starts light too (one type check, cheaper than isinstance
# against an abstract base).
_LIGHT = (LightSpan, LocalRoot)


def _tried_again(attributes: Mapping[str, AttributeValue]) -> bool:
    """An RPC attempt or a DNS query after the first."""
    attempt = attributes.get(semconv.JOB_ATTEMPT) or attributes.get(semconv.DNS_ATTEMPT)
    return isinstance(attempt, int) and attempt > 1


class KeepingTracer(trace.Tracer):
    """The SDK's tracer, with a light span where it would return a non-recording one that
    starts or continues a dropped local trace."""

    def __init__(
        self,
        tracer: SdkTracer,
        keeper: Keeper,
        scope: InstrumentationScope,
        ids: _ChosenTraceIds,
        keeps: bool = True,
    ) -> None:
        self._tracer = tracer
        # False: nothing is kept (the threshold is 0), and only sampled spans are light.
        self._keeps = keeps
        self._keeper = keeper
        self._scope = scope
        self._ids = ids
        self._sampler = tracer.sampler
        self._new_span_id = ids.ids.generate_span_id
        # Sampled spans are light where the SDK is one checked and its own span would
        # add nothing a processor sees; the rest is checked per span (_sampled_light).
        self._sampled_light_possible = (
            sampled_spans_checked()
            and isinstance(tracer.span_processor, SynchronousMultiSpanProcessor)
            and isinstance(tracer._tracer_metrics, NoOpTracerMetrics)
        )
        self._follows_sampled_parents = _follows_sampled_parents(tracer.sampler)
        self._samples_roots = _samples_roots(tracer.sampler)
        self._root_bound = _root_ratio_bound(tracer.sampler)
        self._sampled_flags = _SAMPLED_RANDOM if ids.is_trace_id_random() else _SAMPLED
        self._checked_processors: tuple[SpanProcessor, ...] | None = None
        self._quiet_processors = False
        self._sink = SampledSink(tracer) if self._sampled_light_possible else None
        # What the SDK gives a span its sampler drops, with this provider's ids.
        self._dropped_flags = TraceFlags(
            TraceFlags.DEFAULT | TraceFlags.RANDOM_TRACE_ID
            if ids.is_trace_id_random()
            else TraceFlags.DEFAULT
        )

    @property
    def keeps(self) -> bool:
        """Whether this tracer records the traces its sampler drops, to keep what went wrong."""
        return self._keeps

    @property
    def scope(self) -> InstrumentationScope:
        """The scope of this tracer's spans."""
        return self._scope

    def start_span(
        self,
        name: str,
        context: Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
    ) -> trace.Span:
        if context is None:
            current = get_current()
            # Most jobs' roots start in an empty context (falsy): no span to look for.
            parent = trace.get_current_span(current) if current else INVALID_SPAN
        else:
            parent = trace.get_current_span(context)
        if type(parent) in _LIGHT:
            return parent._child(  # type: ignore[attr-defined,no-any-return]  # just checked
                self._scope, self._new_span_id, name, kind, attributes, links, start_time
            )
        if (
            type(parent) is SampledSpan
            and self._follows_sampled_parents
            and parent._context.is_valid
            and self._sampled_light(links, record_exception, set_status_on_exception)
        ):
            # A sampled light parent (the job's span, a call's): its context is sampled, and
            # its flags are the ones its child takes; the sampler is not asked.
            sampled_parent: SpanContext = parent._context
            return SampledSpan(
                self._sink,  # type: ignore[arg-type]  # set where sampled spans are light
                name,
                SpanContext(
                    sampled_parent[0],
                    self._new_span_id(),
                    False,
                    sampled_parent[3],
                    sampled_parent[4],
                ),
                sampled_parent,
                kind,
                attributes,
                start_time or time_ns(),
            )
        parent_context = parent.get_span_context()
        if parent is INVALID_SPAN or not parent_context.is_valid:
            return self._start_root(
                name,
                context,
                kind,
                attributes,
                links,
                start_time,
                record_exception,
                set_status_on_exception,
            )
        if (
            parent_context.trace_flags.sampled
            and self._follows_sampled_parents
            and self._sampled_light(links, record_exception, set_status_on_exception)
        ):
            # The sampler would say yes and add nothing: it is not asked.
            return SampledSpan(
                self._sink,  # type: ignore[arg-type]  # set where sampled spans are light
                name,
                SpanContext(
                    parent_context.trace_id,
                    self._new_span_id(),
                    False,
                    _SAMPLED_RANDOM if parent_context.trace_flags.random_trace_id else _SAMPLED,
                    parent_context.trace_state,
                ),
                parent_context,
                kind,
                attributes,
                start_time or time_ns(),
            )
        span = self._tracer.start_span(
            name,
            context,
            kind,
            attributes,
            links,
            start_time,
            record_exception,
            set_status_on_exception,
        )
        if span.is_recording():
            return span
        if not parent_context.is_remote or not self._keeps:
            # Under a local span that records nothing (keeping was off for that trace), or
            # this process keeps nothing.
            return span
        return LocalRoot(
            self._keeper,
            self._scope,
            name,
            span.get_span_context(),
            parent_context,
            kind,
            attributes,
            links,
            start_time or time_ns(),
        )

    def _start_root(
        self,
        name: str,
        context: Context | None,
        kind: SpanKind,
        attributes: Attributes,
        links: Sequence[Link] | None,
        start_time: int | None,
        record_exception: bool,
        set_status_on_exception: bool,
    ) -> trace.Span:
        """A span with no parent: the head sampler is asked here, as the SDK would ask it,
        so that a root it drops becomes a local root without an SDK span made first and
        thrown away (most of what keeping would cost an unsampled job). A root it samples
        the SDK starts, with the trace id that was sampled."""
        ids = self._ids
        trace_id = ids.ids.generate_trace_id()
        if self._samples_roots and self._sampled_light(
            links, record_exception, set_status_on_exception
        ):
            # The sampler would say yes, add nothing and pass no trace state: not asked.
            return SampledSpan(
                self._sink,  # type: ignore[arg-type]  # set where sampled spans are light
                name,
                SpanContext(trace_id, self._new_span_id(), False, self._sampled_flags),
                None,
                kind,
                attributes,
                start_time or time_ns(),
            )
        bound = self._root_bound
        trace_state: TraceState | None = None
        if bound is None or trace_id & _TRACE_ID_LIMIT < bound:
            sampled = self._sampler.should_sample(
                context, trace_id, name, kind, attributes, links or ()
            )
            decision = sampled.decision
            if decision is Decision.RECORD_AND_SAMPLE and self._sampled_light(
                links, record_exception, set_status_on_exception
            ):
                return SampledSpan(
                    self._sink,  # type: ignore[arg-type]  # set where sampled spans are light
                    name,
                    SpanContext(
                        trace_id,
                        self._new_span_id(),
                        False,
                        self._sampled_flags,
                        sampled.trace_state,
                    ),
                    None,
                    kind,
                    sampled.attributes,
                    start_time or time_ns(),
                )
            if decision.is_recording():  # type: ignore[no-untyped-call]  # the SDK's, untyped
                with ids.lock:
                    ids.chosen = trace_id
                    try:
                        return self._tracer.start_span(
                            name,
                            context,
                            kind,
                            attributes,
                            links,
                            start_time,
                            record_exception,
                            set_status_on_exception,
                        )
                    finally:
                        ids.chosen = 0
            trace_state = sampled.trace_state
        # Else the ratio sampler drops the root, as its own check of the trace id says: most
        # jobs at the rates people sample, so it is not asked (a call, a parent looked up
        # twice in the context, a result made), and the root has no trace state.
        dropped = SpanContext(
            trace_id, self._new_span_id(), False, self._dropped_flags, trace_state
        )
        if not self._keeps:
            # What the SDK makes of a root its sampler drops.
            return NonRecordingSpan(dropped)
        return LocalRoot(
            self._keeper,
            self._scope,
            name,
            dropped,
            None,
            kind,
            attributes,
            links,
            start_time or time_ns(),
        )

    def _sampled_light(
        self,
        links: Sequence[Link] | None,
        record_exception: bool,
        set_status_on_exception: bool,
    ) -> bool:
        """Whether a sampled span started with these options can be a :class:`SampledSpan`
        now: no links and the default exception handling, the SDK is one checked, the tracer
        is enabled, and no span processor looks at a span before it ends. The processors
        are looked at again only when one is added."""
        if links or not record_exception or not set_status_on_exception:
            return False
        if not self._sampled_light_possible:
            return False
        tracer = self._tracer
        if not tracer._tracer_config.is_enabled:
            return False
        processors = tracer.span_processor._span_processors
        if processors is not self._checked_processors:
            self._checked_processors = processors
            self._quiet_processors = all(
                type(each).on_start in _QUIET_HOOKS and type(each)._on_ending in _QUIET_HOOKS
                for each in processors
            )
        return self._quiet_processors

    def note_child(
        self,
        parent: trace.Span,
        name: str,
        kind: SpanKind,
        attributes: Mapping[str, AttributeValue],
    ) -> NotedSpan | None:
        """A :class:`NotedSpan` under ``parent`` when ``parent`` is a light span whose trace is
        held; None otherwise (then start a span as usual). ``attributes`` are not copied: what
        is set later is kept apart, so a caller may pass a dict it reuses."""
        noted = NotedSpan.__new__(NotedSpan)
        if not self.note(noted, parent, kind is SpanKind.CLIENT and _tried_again(attributes)):
            return None
        noted._name = name
        noted._kind = kind
        noted._attributes = attributes
        noted._scope = self._scope
        return noted

    def note(self, noted: NotedSpan, parent: trace.Span, retried: bool = False) -> bool:
        """Start ``noted`` (not started yet) as a child of ``parent``: its ids, its start and
        its trace; False, and ``noted`` left as it was, when ``parent`` is not a light span
        whose trace is held. ``retried``: it is an attempt after the first, which keeps the
        trace. What it is (name, kind, attributes, scope) is read only if the trace is kept:
        set by the caller, or given by a subclass when asked (:meth:`NotedSpan.describe`)."""
        parent_type = type(parent)
        if parent_type is LocalRoot:
            root: LocalRoot = parent  # type: ignore[assignment]  # its type, just checked
        elif parent_type is LightSpan:
            root = parent._root  # type: ignore[attr-defined]  # its type, just checked
        else:
            return False
        if root.state != _WAITING:
            return False
        if retried:
            root.marks |= _RETRIED
        noted._root = root
        if root.noted is None:
            root.noted = noted
        elif root.spans is None:
            root.spans = [noted]
        else:
            root.spans.append(noted)
        noted._parent = parent._context  # type: ignore[attr-defined]  # a light span's
        noted.span_id = self._new_span_id()
        noted._set = None
        noted._status = _UNSET
        noted._start = time_ns()
        noted._end = None
        return True

    # The API types this with its private context-manager decorator; a plain one does the same.
    @contextmanager
    def start_as_current_span(  # type: ignore[override]
        self,
        name: str,
        context: Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
        end_on_exit: bool = True,
    ) -> Iterator[trace.Span]:
        span = self.start_span(name, context, kind, attributes, links, start_time)
        with trace.use_span(
            span,
            end_on_exit=end_on_exit,
            record_exception=record_exception,
            set_status_on_exception=set_status_on_exception,
        ) as current:
            yield current


def sampled_spans_checked() -> bool:
    """True when the installed SDK is a release :class:`SampledSpan` was checked against."""
    try:
        return metadata.version("opentelemetry-sdk") in CHECKED_SDK_VERSIONS
    except metadata.PackageNotFoundError:
        return False


def _samples_everything(sampler: Sampler) -> bool:
    return type(sampler) is StaticSampler and sampler._decision is Decision.RECORD_AND_SAMPLE


def _samples_roots(sampler: Sampler) -> bool:
    """True when ``sampler`` samples every root and adds nothing to it (``always_on`` and
    ``parentbased_always_on``)."""
    return _samples_everything(sampler) or (
        isinstance(sampler, ParentBased) and _samples_everything(sampler._root)
    )


def _root_ratio_bound(sampler: Sampler) -> int | None:
    """The bound under which ``sampler`` samples a span with no parent, when it is the SDK's
    trace id ratio sampler, alone (``traceidratio``) or as the root sampler of the SDK's
    ``ParentBased`` (``parentbased_traceidratio``); None for any other sampler.

    For such a span it samples when the low 64 bits of the trace id are under the bound,
    with no attributes and no trace state (it has no parent to take one from): nothing
    else is read, so a trace id at or over the bound is a root it drops."""
    root = sampler
    if (
        isinstance(sampler, ParentBased)
        and type(sampler).should_sample is ParentBased.should_sample
    ):
        root = sampler._root
    if type(root) is TraceIdRatioBased:
        return root.bound
    return None


def _follows_sampled_parents(sampler: Sampler) -> bool:
    """True when ``sampler`` samples every child of a sampled parent and adds nothing to it
    (``always_on`` and the ``parentbased_*`` samplers the ``OTEL_*`` variables choose)."""
    if _samples_everything(sampler):
        return True
    return (
        isinstance(sampler, ParentBased)
        and _samples_everything(sampler._remote_parent_sampled)
        and _samples_everything(sampler._local_parent_sampled)
    )


class _ChosenTraceIds(IdGenerator):
    """A provider's ids, except the trace id of a root whose sampling keeping asked first
    (:meth:`KeepingTracer._start_root`): the SDK, starting that root, takes that one."""

    def __init__(self, ids: IdGenerator) -> None:
        self.ids = ids
        self.chosen = 0
        """The trace id the SDK takes next, 0 for none; set and taken under ``lock``."""
        self.lock = threading.Lock()

    def generate_span_id(self) -> int:
        return self.ids.generate_span_id()

    def generate_trace_id(self) -> int:
        chosen = self.chosen
        if chosen:
            self.chosen = 0
            return chosen
        return self.ids.generate_trace_id()

    def is_trace_id_random(self) -> bool:
        return self.ids.is_trace_id_random()


class KeepingTracerProvider(TracerProvider):
    """The SDK's provider, its head sampler unchanged, whose tracers keep what went wrong
    (unless ``settings`` keep nothing) and make light sampled spans."""

    def __init__(
        self,
        settings: KeepSettings,
        *,
        resource: Resource,
        sampler: Sampler | None = None,
        id_generator: IdGenerator | None = None,
    ) -> None:
        self._ids = _ChosenTraceIds(id_generator or RandomIdGenerator())
        super().__init__(resource=resource, sampler=sampler, id_generator=self._ids)
        self.keeper = Keeper(settings, resource, self._span_limits)
        self.keeps = settings.on
        """Whether traces the sampler drops are recorded, to keep those that went wrong."""

    def get_tracer(
        self,
        instrumenting_module_name: str,
        instrumenting_library_version: str | None = None,
        schema_url: str | None = None,
        attributes: Attributes = None,
    ) -> trace.Tracer:
        tracer = super().get_tracer(
            instrumenting_module_name, instrumenting_library_version, schema_url, attributes
        )
        scope = InstrumentationScope(
            instrumenting_module_name, instrumenting_library_version, schema_url, attributes
        )
        if not isinstance(tracer, SdkTracer):
            # The SDK turned off (OTEL_SDK_DISABLED): its no-op tracer, with nothing to keep.
            return tracer
        return KeepingTracer(tracer, self.keeper, scope, self._ids, self.keeps)


def records_dropped_traces(provider: trace.TracerProvider) -> bool:
    """True when ``provider`` records (lightly) the traces its sampler drops."""
    return isinstance(provider, KeepingTracerProvider) and provider.keeps


def keeping_tracer_provider(
    head: TracerProvider, resource: Resource, settings: KeepSettings
) -> TracerProvider:
    """A provider like ``head`` (made from the ``OTEL_*`` variables, nothing added to it yet)
    that keeps what went wrong (``settings`` permitting) and makes light sampled spans;
    ``head`` itself when its sampler never starts a trace."""
    if not keeps_anything(head.sampler):
        return head
    head.shutdown()
    return KeepingTracerProvider(
        settings, resource=resource, sampler=head.sampler, id_generator=head.id_generator
    )


def connect_keeping(
    provider: TracerProvider, export: SpanProcessor, meter_provider: metrics.MeterProvider
) -> Keeper | None:
    """Send what ``provider`` keeps through ``export``; None when it keeps nothing."""
    if not isinstance(provider, KeepingTracerProvider) or not provider.keeps:
        return None
    provider.keeper.connect(export, metrics.get_meter(SCOPE, meter_provider=meter_provider))
    return provider.keeper
