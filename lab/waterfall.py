"""Draw one trace as a waterfall people can read in a terminal.

Each line is a span, indented under its parent, with a bar placed on the
trace's timeline and the few attributes that explain it (which query, which
nameserver, which rcode, which relay, which status).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from bunnyrelay import semconv
from lab.otlpsink import SinkSpan


def _detail(span: SinkSpan) -> str:
    a = span.attributes
    if span.name == "dns.query":
        answers = ",".join(a.get(semconv.DNS_ANSWERS, []) or [])
        parts = [
            str(a.get(semconv.DNS_QUESTION_TYPE, "")),
            str(a.get(semconv.DNS_QUESTION_NAME, "")),
            f"@{a.get(semconv.DNS_NAMESERVER, '?')}",
            f"#{a.get(semconv.DNS_ATTEMPT, '?')}",
            str(a.get(semconv.DNS_RCODE, "")),
        ]
        if answers:
            parts.append(f"-> {answers} ttl={a.get(semconv.DNS_TTL, '?')}")
        if a.get(semconv.DNS_SOURCE, "wire") != "wire":
            parts.append(f"({a[semconv.DNS_SOURCE]})")
        return " ".join(p for p in parts if p)
    if span.name == "dns.lookup":
        answers = ",".join(a.get(semconv.DNS_ANSWERS, []) or [])
        text = f"{a.get(semconv.DNS_QUESTION_NAME, '')} from {a.get(semconv.DNS_SOURCE, '?')}"
        if answers:
            text += f" -> {answers}"
        return text
    if span.kind in ("CLIENT", "SERVER") and semconv.RPC_METHOD in a:
        peer = a.get(semconv.NETWORK_PEER_ADDRESS, "")
        code = a.get(semconv.RPC_GRPC_STATUS_CODE, "")
        attempt = a.get(semconv.JOB_ATTEMPT)
        text = f"peer {peer} status {code}"
        return f"attempt {attempt} {text}" if attempt is not None else text
    if semconv.JOB_STATUS in a:
        text = f"{a.get(semconv.JOB_ID, '')} {a[semconv.JOB_STATUS]}"
        instance = a.get(semconv.RELAY_INSTANCE)
        return f"{text} on {instance}" if instance else text
    return ""


def render(spans: Sequence[SinkSpan], *, bar_width: int = 32, name_width: int = 44) -> str:
    """The waterfall of ``spans`` (normally one trace), roots first, children by start time."""
    if not spans:
        return "(no spans)"
    by_id = {s.span_id: s for s in spans}
    children: dict[str, list[SinkSpan]] = defaultdict(list)
    roots = []
    for span in sorted(spans, key=lambda s: s.start_ns):
        if span.parent_id and span.parent_id in by_id:
            children[span.parent_id].append(span)
        else:
            roots.append(span)
    start = min(s.start_ns for s in spans)
    end = max(s.end_ns for s in spans)
    scale = bar_width / max(end - start, 1)
    lines = [f"trace {spans[0].trace_id}  {(end - start) / 1e6:.2f} ms"]

    def walk(span: SinkSpan, depth: int) -> None:
        left = int((span.start_ns - start) * scale)
        width = max(1, int((span.end_ns - span.start_ns) * scale))
        bar = " " * left + "#" * min(width, bar_width - left)
        label = ("  " * depth + span.name)[:name_width]
        mark = " !" if span.status == "ERROR" else "  "
        lines.append(
            f"{span.service:<6} {label:<{name_width}} |{bar:<{bar_width}}|"
            f"{span.duration_ms:8.2f} ms{mark} {_detail(span)}"
        )
        for child in children[span.span_id]:
            walk(child, depth + 1)

    for root in roots:
        walk(root, 0)
    return "\n".join(lines)
