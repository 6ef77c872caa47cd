"""OTLP span encoding that writes the protobuf wire format itself: the official request, cheaper.

The SDK's own encoder (``encode_spans`` of opentelemetry-exporter-otlp-proto-common)
builds a protobuf object for every span, key-value pair and value, which costs more CPU
than creating the span. Most of that work repeats: spans of one process share their
resource and scope, and their attributes are mostly the same pairs (``rpc.system=grpc``,
``server.address=…``, the same job kinds). So here:

- each span is written straight to wire bytes, fields in field-number order as upb writes
  them, so the bytes equal the official request's serialization, not only its meaning;
- an attribute pair whose value is a ``str``, ``int``, ``bool`` or a tuple of one ``str``,
  and a span or event name, is encoded once and kept in a bounded cache (a value such as
  a job id never repeats and only passes through);
- a resource or an instrumentation scope is encoded once per object: both are immutable,
  kept by identity in a small bounded table;
- grouping by resource and scope follows the official encoder: equal resources (not only
  the same object) share one ``ResourceSpans``, in the order they first appear.

A span this module cannot write exactly as the official encoder would (an int beyond
int64, a string that is not UTF-8, a value of a type the SDK never makes, a span the
official encoder rejects) is encoded by the official encoder, that span alone, so the
result, its logging and its exceptions stay the official ones.

This module reads the SDK's span objects and calls the official encoder's private
functions, so it is imported only where :mod:`bunnyrelay.otlpencode` found the SDK
versions it was checked against.
"""

from __future__ import annotations

import functools
import operator
import struct
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence

from opentelemetry.attributes import BoundedAttributes
from opentelemetry.exporter.otlp.proto.common._internal import (
    _encode_instrumentation_scope,
    _encode_resource,
)
from opentelemetry.exporter.otlp.proto.common._internal.trace_encoder import _encode_span
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util import BoundedList
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, TraceState
from opentelemetry.trace.status import StatusCode

__all__ = [
    "cache_sizes",
    "encode_spans",
    "serialize_spans",
]


PAIR_CACHE_KEYS = 256
"""Attribute keys whose pairs are kept encoded: far more than bunny and relay use."""
VALUES_PER_KEY = 64
"""Values kept encoded per attribute key. A key with more distinct values (a job id, new on
every span) is one whose pairs do not repeat: past this many its pairs are no longer cached."""
NAME_CACHE_SIZE = 1024
"""Span and event names kept encoded."""
OBJECT_CACHE_SIZE = 64
"""Resources and instrumentation scopes kept encoded (a process has a handful)."""

_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1
_UINT32_MAX = (1 << 32) - 1
_UINT64_MASK = (1 << 64) - 1
_FIXED32 = struct.Struct("<I")
_FIXED64 = struct.Struct("<Q")
_DOUBLE = struct.Struct("<d")
_BYTE = [bytes((n,)) for n in range(128)]
# A span's trace and span ids (fields 1 and 2), its parent's span id (field 4), its start and
# end times (fields 7 and 8): each a few fields packed in one call.
_IDS = struct.Struct(">2sQQ2sQ")
_PARENT = struct.Struct(">2sQ")
_TIMES = struct.Struct("<BQBQ")

# Span.kind (field 6) for each SDK kind; the enum's numbers are the SDK's plus one.
_KIND_FIELD = {
    SpanKind.INTERNAL: b"\x30\x01",
    SpanKind.SERVER: b"\x30\x02",
    SpanKind.CLIENT: b"\x30\x03",
    SpanKind.PRODUCER: b"\x30\x04",
    SpanKind.CONSUMER: b"\x30\x05",
}
# Span.flags (field 16, fixed32) / Link.flags (field 6): SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK,
# with SPAN_FLAGS_CONTEXT_IS_REMOTE_MASK when the parent (or the linked context) is remote.
# The same, by SpanKind's value (an enum's hash is a call to Python code).
_KIND_FIELDS = tuple(_KIND_FIELD[kind] for kind in sorted(SpanKind, key=lambda k: k.value))
_SPAN_FLAGS = (b"\x85\x01" + _FIXED32.pack(0x100), b"\x85\x01" + _FIXED32.pack(0x300))
_LINK_FLAGS = (b"\x35" + _FIXED32.pack(0x100), b"\x35" + _FIXED32.pack(0x300))
_STATUS_UNSET = b"\x7a\x00"
_STATUS_OK = b"\x7a\x02\x18\x01"


def _varint(n: int) -> bytes:
    if n < 0x80:
        return _BYTE[n]
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _sized(data: bytes) -> bytes:
    """A length-delimited field's payload: its length, then the bytes."""
    size = len(data)
    if size < 0x80:
        return _BYTE[size] + data
    if size < 0x4000:
        # Two bytes (a span, a batch's small groups): without _varint's loop.
        return bytes((size & 0x7F | 0x80, size >> 7)) + data
    return _varint(size) + data


def _uint32(n: int) -> bytes:
    if not 0 <= n <= _UINT32_MAX:
        raise ValueError(f"{n} does not fit a uint32 field")
    return _varint(n)


def _any_value(value: object) -> bytes:
    """An ``AnyValue`` message, its type chosen in the official encoder's order."""
    if value is None:
        return b""
    if isinstance(value, bool):
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, str):
        return b"\x0a" + _sized(value.encode())
    if isinstance(value, int):
        number = operator.index(value)
        if not _INT64_MIN <= number <= _INT64_MAX:
            raise ValueError(f"{number} does not fit an int64 value")
        return b"\x18" + _varint(number & _UINT64_MASK)
    if isinstance(value, float):
        return b"\x21" + _DOUBLE.pack(value)
    if isinstance(value, bytes):
        return b"\x3a" + _sized(value)
    if isinstance(value, Sequence):
        items = b"".join([b"\x0a" + _sized(_any_value(item)) for item in value])
        return b"\x2a" + _sized(items)
    if isinstance(value, Mapping):
        pairs = b"".join([b"\x0a" + _sized(_key_value(str(k), v)) for k, v in value.items()])
        return b"\x32" + _sized(pairs)
    raise TypeError(f"no AnyValue for {type(value)}")


def _key_value(key: str, value: object) -> bytes:
    """A ``KeyValue`` message (the value is always present, even when empty)."""
    encoded_key = key.encode()
    head = b"\x0a" + _sized(encoded_key) if encoded_key else b""
    return head + b"\x12" + _sized(_any_value(value))


class _PairCache:
    """Encoded attribute pairs of one value type, by key, then by value.

    Plain dicts of ``str``/``int`` keys and ``bytes`` values on purpose: the garbage
    collector never tracks such a dict, so no collection walks it. An ``lru_cache`` keyed by
    ``(key, value)`` tuples was walked by most of an exporting process's youngest-generation
    collections: a collection untracks those tuples (they hold only strings) and then the
    dict, and the next new entry puts the dict, thousands of entries, back among the young
    objects, so the next collection walks it again; job ids, new on every span, made a new
    entry (and an eviction) per span. One value type per cache, since ``True == 1``.
    """

    __slots__ = ("_by_key", "_in_tuple")

    def __init__(self, *, in_tuple: bool = False) -> None:
        # None: a key with too many distinct values to be worth caching.
        self._by_key: dict[str, dict[object, bytes] | None] = {}
        # The value is the one item of a tuple (an answer's one address), kept by that item.
        self._in_tuple = in_tuple

    def get(self, key: str, value: str | int) -> bytes:
        by_key = self._by_key
        values = by_key.get(key)
        if values is not None:
            encoded = values.get(value)
            if encoded is not None:
                return encoded
        encoded = _sized(_key_value(key, (value,) if self._in_tuple else value))
        if values is None:
            if key in by_key or len(by_key) >= PAIR_CACHE_KEYS:
                return encoded
            values = by_key[key] = {}
        if len(values) >= VALUES_PER_KEY:
            by_key[key] = None
        else:
            # Racing exporter threads at worst encode a pair twice.
            values[value] = encoded
        return encoded

    def __len__(self) -> int:
        return sum(len(values) for values in self._by_key.values() if values is not None)


_pair_caches = {str: _PairCache(), int: _PairCache(), bool: _PairCache()}
_pair_tables = {kind: cache._by_key for kind, cache in _pair_caches.items()}
_one_string_tuples = _PairCache(in_tuple=True)


@functools.lru_cache(maxsize=NAME_CACHE_SIZE)
def _cached_name(name: str) -> bytes:
    return _sized(name.encode())


def _attributes(tag: bytes, attributes: Mapping[str, object] | None) -> bytes:
    """Every pair of ``attributes`` as repeated ``KeyValue`` fields with ``tag``."""
    if not attributes:
        return b""
    # The SDK's BoundedAttributes iterates in Python, key by key; its copy() is a dict copy.
    copy = getattr(attributes, "copy", None)
    snapshot: Mapping[str, object] = copy() if copy is not None else attributes
    return _pairs(tag, snapshot.items())


def _pairs(tag: bytes, items: Iterable[tuple[str, object]]) -> bytes:
    """``items`` as repeated ``KeyValue`` fields with ``tag``; ``b""`` for none."""
    pairs: list[bytes] = []
    append = pairs.append
    tables = _pair_tables
    for key, value in items:
        # Only exact str, int and bool: a subclass may encode another way; floats are never
        # cached (0.0 == -0.0, and nan is not equal to itself). The caches' dicts are read
        # here rather than through _PairCache.get: most pairs are found, a call less each.
        kind = type(value)
        table = tables.get(kind)
        if table is not None:
            values = table.get(key)
            if values is not None:
                encoded = values.get(value)
                if encoded is not None:
                    append(encoded)
                    continue
            append(_pair_caches[kind].get(key, value))  # type: ignore[arg-type]
        elif kind is tuple and len(value) == 1 and type(value[0]) is str:  # type: ignore[arg-type,index]
            # A tuple of one string (a lookup's one address), kept by that string.
            append(_one_string_tuples.get(key, value[0]))  # type: ignore[index]
        else:
            append(_sized(_key_value(key, value)))
    if not pairs:
        return b""
    return tag + tag.join(pairs)


class _ObjectCache:
    """Encodings of immutable objects (resources, scopes), kept by identity, bounded.

    Each entry holds the object itself, so its id cannot be reused while the entry lives.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._entries: dict[int, tuple[object, bytes]] = {}
        self._lock = threading.Lock()

    def get(self, obj: object) -> bytes | None:
        entry = self._entries.get(id(obj))
        if entry is not None and entry[0] is obj:
            return entry[1]
        return None

    def put(self, obj: object, encoded: bytes) -> None:
        with self._lock:
            while len(self._entries) >= self.size:
                del self._entries[next(iter(self._entries))]
            self._entries[id(obj)] = (obj, encoded)

    def __len__(self) -> int:
        return len(self._entries)


_resources = _ObjectCache(OBJECT_CACHE_SIZE)
_scopes = _ObjectCache(OBJECT_CACHE_SIZE)


def _frozen(value: object) -> bool:
    """Whether ``value`` cannot change (a mapping value inside attributes could)."""
    if value is None or isinstance(value, str | bytes | bool | int | float):
        return True
    return isinstance(value, tuple) and all(_frozen(item) for item in value)


def _all_frozen(attributes: Mapping[str, object] | None) -> bool:
    return not attributes or all(_frozen(value) for value in attributes.values())


def _written(write: Callable[[], bytes]) -> bytes | None:
    """What ``write`` returns, or None where the official encoder must do the work.

    The official encoder is then called outside any except block, so that it logs, skips
    or raises as the exporters would without this module, our exception chained to nothing.
    """
    try:
        return write()
    except Exception:
        return None


def _resource_field(resource: Resource) -> bytes:
    """``ResourceSpans.resource`` (field 1), tag included."""
    encoded = _resources.get(resource)
    if encoded is not None:
        return encoded
    body = _written(lambda: _attributes(b"\x0a", resource.attributes))
    if body is None:
        return b"\x0a" + _sized(_encode_resource(resource).SerializeToString())
    encoded = b"\x0a" + _sized(body)
    if _all_frozen(resource.attributes):
        _resources.put(resource, encoded)
    return encoded


def _scope_field(scope: InstrumentationScope | None) -> bytes:
    """``ScopeSpans.scope`` (field 1), tag included; present and empty for no scope."""
    if scope is None:
        return b"\x0a\x00"
    encoded = _scopes.get(scope)
    if encoded is not None:
        return encoded
    body = _written(lambda: _scope(scope))
    if body is None:
        return b"\x0a" + _sized(_encode_instrumentation_scope(scope).SerializeToString())
    encoded = b"\x0a" + _sized(body)
    if _all_frozen(scope.attributes):
        _scopes.put(scope, encoded)
    return encoded


def _scope(scope: InstrumentationScope) -> bytes:
    """One ``InstrumentationScope`` message (no dropped count: the official sets none)."""
    name, version = scope.name, scope.version
    return b"".join(
        [
            b"\x0a" + _sized(name.encode()) if name else b"",
            b"\x12" + _sized(version.encode()) if version else b"",
            _attributes(b"\x1a", scope.attributes),
        ]
    )


def _is_remote(context: SpanContext | None) -> bool:
    return bool(context and context.is_remote)


def _span(span: ReadableSpan) -> bytes:
    """One ``Span`` message, fields in number order (flags, field 16, last)."""
    context = span.get_span_context()
    assert context is not None  # the official encoder fails on it too: it falls back there
    parts = [
        b"\x0a\x10" + context.trace_id.to_bytes(16, "big"),
        b"\x12\x08" + context.span_id.to_bytes(8, "big"),
    ]
    trace_state = context.trace_state
    if trace_state:
        header = ",".join([f"{key}={value}" for key, value in trace_state.items()])
        parts.append(b"\x1a" + _sized(header.encode()))
    parent = span.parent
    if parent:
        parts.append(b"\x22\x08" + parent.span_id.to_bytes(8, "big"))
    name = span.name
    if name:
        parts.append(b"\x2a" + (_cached_name(name) if type(name) is str else _sized(name.encode())))
    parts.append(_KIND_FIELD[span.kind])
    if span.start_time:
        parts.append(b"\x39" + _FIXED64.pack(span.start_time))
    if span.end_time:
        parts.append(b"\x41" + _FIXED64.pack(span.end_time))
    parts.append(_attributes(b"\x4a", span.attributes))
    if span.dropped_attributes:
        parts.append(b"\x50" + _uint32(span.dropped_attributes))
    for event in span.events:
        parts.append(b"\x5a" + _sized(_event(event)))
    if span.dropped_events:
        parts.append(b"\x60" + _uint32(span.dropped_events))
    for link in span.links:
        link_context = link.context
        body = b"".join(
            [
                b"\x0a\x10" + link_context.trace_id.to_bytes(16, "big"),
                b"\x12\x08" + link_context.span_id.to_bytes(8, "big"),
                _attributes(b"\x22", link.attributes),
                b"\x28" + _uint32(link.dropped_attributes) if link.dropped_attributes else b"",
                _LINK_FLAGS[_is_remote(link_context)],
            ]
        )
        parts.append(b"\x6a" + _sized(body))
    if span.dropped_links:
        parts.append(b"\x70" + _uint32(span.dropped_links))
    parts.append(_status(span))
    parts.append(_SPAN_FLAGS[_is_remote(parent)])
    return b"".join(parts)


def _event(event: Event) -> bytes:
    """One ``Span.Event`` message."""
    name, timestamp = event.name, event.timestamp
    return b"".join(
        [
            b"\x09" + _FIXED64.pack(timestamp) if timestamp else b"",
            b"\x12" + (_cached_name(name) if type(name) is str else _sized(name.encode()))
            if name
            else b"",
            _attributes(b"\x1a", event.attributes),
            b"\x20" + _uint32(event.dropped_attributes) if event.dropped_attributes else b"",
        ]
    )


def _status(span: ReadableSpan) -> bytes:
    """``Span.status`` (field 15), tag included; absent only when the span has none."""
    status = span.status
    if status is None:
        return b""
    code, message = status.status_code.value, status.description
    if not message:
        if code == StatusCode.UNSET.value:
            return _STATUS_UNSET
        if code == StatusCode.OK.value:
            return _STATUS_OK
    body = (b"\x12" + _sized(message.encode()) if message else b"") + (
        b"\x18" + _varint(code) if code else b""
    )
    return b"\x7a" + _sized(body)


def _readable(span: ReadableSpan) -> bytes:
    """:func:`_span` for a plain ``ReadableSpan`` (what the SDK's spans and bunnyrelay's
    light ones hand the processors when they end), read from the fields its properties
    return, without the call per property and the copies they make: the same bytes, for
    about a third of the work. Anything unusual about the span goes to :func:`_span`."""
    context = span._context
    trace_id = context[0]  # type: ignore[index]  # a SpanContext, a tuple
    state = context[4]  # type: ignore[index]
    parent = span._parent
    head = _IDS.pack(
        b"\x0a\x10",
        trace_id >> 64,
        trace_id & _UINT64_MASK,
        b"\x12\x08",
        context[1],  # type: ignore[index]
    )
    if type(state) is not TraceState or state._dict:
        head += _trace_state_field(state)
    if parent:
        head += _PARENT.pack(b"\x22\x08", parent[1])
    name = span._name
    if name:
        head += b"\x2a" + (_cached_name(name) if type(name) is str else _sized(name.encode()))
    start, end = span._start_time, span._end_time
    if start and end:
        times = _TIMES.pack(0x39, start, 0x41, end)
    else:
        times = (b"\x39" + _FIXED64.pack(start) if start else b"") + (
            b"\x41" + _FIXED64.pack(end) if end else b""
        )
    attributes = span._attributes
    kind = type(attributes)
    if kind is dict:
        pairs = _pairs(b"\x4a", attributes.items())  # type: ignore[union-attr]
    elif kind is BoundedAttributes:
        pairs = _pairs(b"\x4a", attributes._dict.items())  # type: ignore[union-attr]
        if attributes.dropped:  # type: ignore[union-attr]
            pairs += b"\x50" + _uint32(attributes.dropped)  # type: ignore[union-attr]
    elif attributes is None:
        pairs = b""
    else:
        return _span(span)
    events, links = span._events, span._links
    if (type(events) is not tuple or type(links) is not tuple or events or links) and not (
        _none_held(events) and _none_held(links)
    ):
        # Events or links (rare): the general way.
        return _span(span)
    status = span._status
    if status is None:
        written_status = b""
    elif status._description:
        written_status = _status(span)
    else:
        code = status._status_code
        if code is StatusCode.UNSET:
            written_status = _STATUS_UNSET
        elif code is StatusCode.OK:
            written_status = _STATUS_OK
        else:
            written_status = _status(span)
    return b"".join(
        (
            head,
            _KIND_FIELDS[span._kind._value_],
            times,
            pairs,
            written_status,
            _SPAN_FLAGS[1 if parent and parent[2] else 0],
        )
    )


def _none_held(items: object) -> bool:
    """Whether ``items`` (a span's events or links) is empty and dropped none."""
    if type(items) is BoundedList:
        return not items._dq and not items.dropped  # type: ignore[attr-defined]
    return type(items) is tuple and not items


def _trace_state_field(state: TraceState) -> bytes:
    """``Span.trace_state`` (field 3), tag included; nothing for an empty one."""
    if not state:
        return b""
    header = ",".join([f"{key}={value}" for key, value in state.items()])
    return b"\x1a" + _sized(header.encode())


def _representatives(spans: Iterable[ReadableSpan]) -> dict[int, Resource]:
    """For each resource object, by id, the first equal resource of the batch."""
    first: dict[int, Resource] = {}
    for span in spans:
        resource = span._resource if type(span) is ReadableSpan else span.resource
        if id(resource) not in first:
            first[id(resource)] = resource
    if len(first) > 1:
        # Equal but distinct resources share one ResourceSpans, as in the official encoder.
        # Hashing a resource is costly (a JSON dump), so only distinct objects are hashed.
        classes: dict[Resource, Resource] = {}
        for key, resource in first.items():
            first[key] = classes.setdefault(resource, resource)
    return first


def serialize_spans(spans: Sequence[ReadableSpan]) -> bytes:
    """The serialized ``ExportTraceServiceRequest`` for ``spans``: byte for byte what
    ``encode_spans(spans).SerializeToString()`` of the official encoder gives."""
    representative = _representatives(spans)
    # Spans grouped by resource, then scope, each in the order first seen. Equal scopes
    # (not only the same object) share one ScopeSpans, as in the official encoder; a scope's
    # hash is a call to Python code, so each scope object is looked up once, then by id.
    scope_classes: dict[InstrumentationScope | None, InstrumentationScope | None] = {}
    scope_keys: dict[int, tuple[int, InstrumentationScope | None]] = {}
    groups: dict[
        int, tuple[Resource, dict[int, tuple[InstrumentationScope | None, list[bytes]]]]
    ] = {}
    for span in spans:
        if type(span) is ReadableSpan:
            resource, scope = span._resource, span._instrumentation_scope
        else:
            resource, scope = span.resource, span.instrumentation_scope
        resource = representative[id(resource)]
        group = groups.get(id(resource))
        if group is None:
            group = groups[id(resource)] = (resource, {})
        scope_key = scope_keys.get(id(scope))
        if scope_key is None:
            same = scope_classes.setdefault(scope or None, scope or None)
            scope_key = scope_keys[id(scope)] = (id(same), same)
        scoped = group[1].get(scope_key[0])
        if scoped is None:
            scoped = group[1][scope_key[0]] = (scope_key[1], [])
        # ScopeSpans.spans (field 2), written here: this runs for every span exported. A
        # span wire cannot write goes to the official encoder, outside the except block
        # (see _written).
        try:
            body = _readable(span) if type(span) is ReadableSpan else _span(span)
        except Exception:
            body = None
        if body is None:
            body = _encode_span(span).SerializeToString()
        scoped[1].append(b"\x12" + _sized(body))

    request = []
    for resource, scopes in groups.values():
        resource_spans = [_resource_field(resource)]
        for scope, encoded_spans in scopes.values():
            scope_spans = [_scope_field(scope), *encoded_spans]
            if scope is not None and scope.schema_url:
                scope_spans.append(b"\x1a" + _sized(scope.schema_url.encode()))
            resource_spans.append(b"\x12" + _sized(b"".join(scope_spans)))
        if resource.schema_url:
            resource_spans.append(b"\x1a" + _sized(resource.schema_url.encode()))
        request.append(b"\x0a" + _sized(b"".join(resource_spans)))
    return b"".join(request)


def encode_spans(spans: Sequence[ReadableSpan]) -> ExportTraceServiceRequest:
    """A request equal to the official ``encode_spans(spans)``, parsed once from wire bytes."""
    return ExportTraceServiceRequest.FromString(serialize_spans(spans))


def cache_sizes() -> dict[str, tuple[int, int]]:
    """``{cache: (entries, bound)}`` for every cache this module keeps."""
    names = _cached_name.cache_info()
    return {
        "pairs": (
            sum(len(cache) for cache in (*_pair_caches.values(), _one_string_tuples)),
            (len(_pair_caches) + 1) * PAIR_CACHE_KEYS * VALUES_PER_KEY,
        ),
        "names": (names.currsize, NAME_CACHE_SIZE),
        "resources": (len(_resources), OBJECT_CACHE_SIZE),
        "scopes": (len(_scopes), OBJECT_CACHE_SIZE),
    }
