"""lab.bench.dnscount: each method's lookups run without the network, and c-ares comes back."""

from __future__ import annotations

import pytest

from bunny.dns.ares import LoopDrivenResolver
from lab.bench.dnscount import METHODS, count


@pytest.mark.parametrize("method", METHODS)
async def test_each_method_runs_its_lookups_and_puts_c_ares_back(method: str) -> None:
    query_dns = LoopDrivenResolver.query_dns

    per_lookup = await count(method, 64)

    assert per_lookup > 0
    assert LoopDrivenResolver.query_dns is query_dns
