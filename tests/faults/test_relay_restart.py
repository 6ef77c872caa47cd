"""A relay restart as users meet it (a pod replaced, a node drained, an OOM kill), with
``bunny submit``'s default retry flags: jobs in flight survive it, each with one effect;
a relay that never comes back fails jobs at their deadline, saying so.

relay is the real process on its default durable store, SIGKILLed and started again on
the same port and state directory; bunny is the real command, finding relay by DNS.
Effects are counted from relay's JSON log (:mod:`tests.faults.harness`).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

import pytest

from lab.dnsserver import ZoneServer
from tests.conftest import RELAY_NAME
from tests.faults.harness import (
    JSON_LOGS,
    Effects,
    ExecutionCount,
    KillableRelay,
    check_results,
    job_ids,
    report,
    submit,
    until_runs,
)

OUTAGE_S = 3.0
"""How long relay stays dead before it is started again: a pod being replaced."""


@pytest.mark.timeout(120)
async def test_jobs_in_flight_survive_a_relay_killed_and_restarted_with_default_flags(
    tmp_path: Path, zone: ZoneServer, capsys: pytest.CaptureFixture[str]
) -> None:
    count = 200
    log = tmp_path / "relay.log"
    relay = KillableRelay("127.0.0.1", log, JSON_LOGS, state_dir=tmp_path / "state")
    expected = job_ids("restart", count)
    try:
        await relay.start()
        zone.set_records(RELAY_NAME, "A", ["127.0.0.1"])
        # Default flags: --concurrency 8, --timeout 30, no --attempts.
        batch = asyncio.create_task(
            submit(
                zone,
                relay.port,
                *("--kind", "sleep", "--payload", "200", "--count", str(count)),
                *("--job-id", "restart"),
            )
        )
        try:
            runs = ExecutionCount([log])
            await until_runs(runs, count // 5, [batch])
            await relay.kill()
            killed_at = time.monotonic()
            ran_before = runs()
            await asyncio.sleep(OUTAGE_S)  # the outage itself is what is being survived
            await relay.start()
            back_at = time.monotonic()
            recovered_at = await until_runs(runs, runs() + 1, [batch])
            done = await batch
        finally:
            batch.cancel()
    finally:
        await relay.close()

    effects = Effects.read([log])
    results, lost, duplicate_results, failures = check_results(done, expected)
    statuses = Counter(line["status"] for line in done.outcomes)
    report(
        capsys,
        f"{count} jobs with bunny's default flags; relay SIGKILLed after {ran_before} "
        f"executions, started again {OUTAGE_S:g} s later:",
        [
            f"{results} results ({dict(statuses)}), {lost} lost, {duplicate_results} "
            f"duplicate results, {len(done.failures(count))} failed",
            effects.describe(),
            f"relay back {back_at - killed_at:.1f} s after the kill; its first job ran "
            f"{recovered_at - back_at:.2f} s after it was ready",
            f"bunny: {done.retries} retries, at most {done.max_attempts} attempts for one job, "
            f"longest job {max(line['duration_ms'] for line in done.outcomes) / 1000:.1f} s, "
            f"{done.seconds:.1f} s in all",
        ],
    )
    assert done.code == 0, (failures, done.stderr[-2000:])
    assert (results, lost, duplicate_results, failures) == (count, 0, 0, [])
    assert statuses == {"SUCCEEDED": count}
    assert set(effects.runs) == set(expected), "every job ran, and nothing else did"
    assert effects.duplicates == 0, "no job ran twice, except one running when relay died"
    assert max(effects.reclaimed.values(), default=0) <= 1
    assert done.max_attempts > 4, "the outage outlasted the old default of 4 attempts"


@pytest.mark.timeout(60)
async def test_jobs_fail_at_their_deadline_with_a_clear_error_when_relay_never_comes_back(
    tmp_path: Path, zone: ZoneServer, capsys: pytest.CaptureFixture[str]
) -> None:
    count, timeout = 24, 4.0  # the deadline is this test's subject
    log = tmp_path / "relay.log"
    relay = KillableRelay("127.0.0.1", log, JSON_LOGS, state_dir=tmp_path / "state")
    try:
        await relay.start()
        zone.set_records(RELAY_NAME, "A", ["127.0.0.1"])
        batch = asyncio.create_task(
            submit(
                zone,
                relay.port,
                *("--kind", "sleep", "--payload", "300", "--count", str(count)),
                *("--job-id", "gone", "--timeout", f"{timeout:g}"),
            )
        )
        try:
            await until_runs(ExecutionCount([log]), 8, [batch])
            await relay.kill()
            done = await batch
        finally:
            batch.cancel()
    finally:
        await relay.close()

    failed = [line for line in done.outcomes if line["status"] == "FAILED"]
    report(
        capsys,
        f"{count} jobs of 0.3 s, --timeout {timeout:g}; relay SIGKILLed and never back:",
        [
            f"{count - len(failed)} succeeded before the kill, {len(failed)} failed",
            f"failed after {min(line['duration_ms'] for line in failed) / 1000:.1f}-"
            f"{max(line['duration_ms'] for line in failed) / 1000:.1f} s and "
            f"{min(line['attempts'] for line in failed)}-"
            f"{max(line['attempts'] for line in failed)} attempts each",
            f"e.g. {failed[0]['error']['type']}: {failed[0]['error']['message']}",
        ],
    )
    assert done.code == 1
    assert len(done.outcomes) == count
    assert len(failed) >= count - 8 - 8, "the jobs not yet done when relay died failed"
    for line in failed:
        error = line["error"]
        assert error["type"] == "RelayUnavailable", error
        assert error["code"] == "UNAVAILABLE", error
        assert "still failing when the job's deadline came (4 s, --timeout)" in error["message"]
        # It kept trying for the job's whole deadline, not for a fraction of a second.
        assert line["duration_ms"] >= 0.75 * timeout * 1000, line
        assert line["attempts"] > 4, line
