"""lab.bench.dnscount: each method's lookups run without the network, and c-ares comes back."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from opentelemetry.sdk.trace import ReadableSpan

from bunny.dns.ares import LoopDrivenResolver
from bunnyrelay.otlpencode import wire
from lab.bench.dnscount import METHODS, PROVIDERS, WARM_UP, count


@pytest.mark.parametrize("method", METHODS)
async def test_each_method_runs_its_lookups_and_puts_c_ares_back(method: str) -> None:
    query_dns = LoopDrivenResolver.query_dns

    per_lookup = await count(method, 64)

    assert per_lookup > 0
    assert LoopDrivenResolver.query_dns is query_dns


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("method", ["floor", "traced"])
async def test_every_traced_lookup_is_encoded_with_either_provider(
    method: str, provider: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    encoded: list[ReadableSpan] = []
    serialize = wire.serialize_spans

    def counting(spans: Sequence[ReadableSpan]) -> bytes:
        encoded.extend(spans)
        return serialize(spans)

    monkeypatch.setattr(wire, "serialize_spans", counting)

    await count(method, 64, provider)

    # The warm-up's lookups and the measured ones, each a dns.lookup span with its name.
    assert len(encoded) == WARM_UP + 64
    assert {span.name for span in encoded} == {"dns.lookup"}
    assert all(span.attributes and "dns.question.name" in span.attributes for span in encoded)
