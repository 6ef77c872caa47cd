"""make bench's side-by-side runs: two cases that name each other ``beside`` overlap in time."""

from __future__ import annotations

import asyncio
import io
import shutil

from lab.bench.cases import CASES, Case, round_order
from lab.bench.rounds import CaseResult
from lab.bench.run import Bench, Plan


async def test_cases_beside_each_other_run_at_the_same_time_and_every_other_case_alone() -> None:
    progress = io.StringIO()
    bench = Bench(Plan(), progress=progress)
    running: set[str] = set()
    seen_together: list[frozenset[str]] = []
    ran: list[str] = []

    async def run_case(case: Case) -> CaseResult:
        running.add(case.key)
        await asyncio.sleep(0.01)
        seen_together.append(frozenset(running))
        await asyncio.sleep(0.01)
        running.discard(case.key)
        ran.append(case.key)
        return CaseResult(case, 1, 0, 1.0, None, None, None, None, None, None)

    bench.run_case = run_case  # type: ignore[method-assign]  # the processes are not the subject
    order = round_order(CASES, 2)
    try:
        results = await bench.run_round(2, CASES)
    finally:
        shutil.rmtree(bench.scratch, ignore_errors=True)
    assert [r.case.key for r in results] == [c.key for c in order]
    said = [line.split("] ", 2)[2] for line in progress.getvalue().splitlines()]
    assert said == [c.label for c in order]
    pairs = {frozenset({c.key, c.beside}) for c in CASES if c.beside}
    assert len(pairs) == 2
    together = {group for group in seen_together if len(group) > 1}
    assert together == pairs
    assert sorted(ran) == sorted(c.key for c in CASES)
