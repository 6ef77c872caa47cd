"""The fault-injection suite: real faults on the wire and real kills, counted from outside.

bunny runs as the real ``bunny submit`` command, with its default retry flags (each
job retried within its deadline), and finds relay by DNS: the
lab's in-process zone server (a real DNS server on 127.0.0.1, the Route 53
zone's role) answers relay's name with the address of a real Toxiproxy,
which forwards to relay and injects the tunnel's faults (:mod:`tests.faults.faultproxy`).
The zone server stands in for the CoreDNS chain on purpose: the chain's own
faults are tests/lab/test_dns_fault_matrix.py's subject, and here the DNS hop
must stay cheap and certain while thousands of jobs cross the faulty wire.

Effects are counted from relay's JSON log (``--log-format json --log-executions``): one
``job.executed`` line per handler run, flushed before its result is stored, so
an effect is never missed even across SIGKILL. A job that was running when
relay died may run once more, and relay says so (``job.reclaimed``); any other
second run is a duplicate effect. Each test prints its numbers at its end.

The SQLite restart case ("jobs that finished before relay was SIGKILLed,
resubmitted with the same ids, are replayed and nothing runs again") is
tests/faults/test_durable_store.py's
``test_a_relay_restarted_on_the_same_sqlite_file_replays_and_runs_nothing_again``;
the soak below repeats it at scale through the faulty wire.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

import pytest

from lab.dnsserver import ZoneServer
from lab.redisserver import RedisServer
from tests.conftest import RELAY_NAME
from tests.faults.faultproxy import CYCLE, REFUSED_OUTAGE, SILENT_OUTAGE, fault_proxy
from tests.faults.harness import (
    JSON_LOGS,
    Effects,
    KillableRelay,
    Step,
    at,
    check_results,
    hold,
    job_ids,
    kill_and_restart,
    report,
    run_schedule,
    submit,
)
from tests.relaylog import executions, log_events

# --- 1. a thousand jobs through faults and two SIGKILLs ------------------------------------------


@pytest.mark.soak
@pytest.mark.timeout(240)
async def test_a_thousand_jobs_cross_a_faulty_wire_and_two_sigkills_each_with_one_effect(
    tmp_path: Path, zone: ZoneServer, capsys: pytest.CaptureFixture[str]
) -> None:
    count = 1000
    log = tmp_path / "relay.log"
    relay = KillableRelay("127.0.0.1", log, JSON_LOGS, state_dir=tmp_path / "state")
    expected = job_ids("thousand", count)
    try:
        await relay.start()
        async with fault_proxy(relay.port) as proxy:
            zone.set_records(RELAY_NAME, "A", [proxy.host], ttl=1)
            batch = asyncio.create_task(
                submit(
                    zone,
                    proxy.port,
                    # Jobs that take a while, so that kills land on jobs in flight.
                    *("--kind", "sleep", "--payload", "250", "--count", str(count)),
                    *("--concurrency", "16", "--job-id", "thousand"),
                )
            )
            try:
                steps = [at(40 + 40 * n, hold(proxy, fault, 3)) for n, fault in enumerate(CYCLE)]
                steps += [
                    at(260, kill_and_restart(relay)),
                    at(320, hold(proxy, SILENT_OUTAGE, 10)),
                    at(420, kill_and_restart(relay)),
                ]
                timeline = await run_schedule(steps, [log], [batch])
                done = await batch
            finally:
                batch.cancel()
    finally:
        await relay.close()

    effects = Effects.read([log])
    results, lost, duplicate_results, failures = check_results(done, expected)
    report(
        capsys,
        f"1,000 jobs through DNS -> Toxiproxy -> relay (SQLite), faults cycling, "
        f"{relay.kills} SIGKILLs:",
        [
            *timeline.rows,
            f"{results} results, {lost} lost, {duplicate_results} duplicate results, "
            f"{len(done.failures(count))} failed",
            effects.describe(),
            f"DNS: {len(zone.log)} queries answered for {RELAY_NAME} (TTL 1 s)",
            f"bunny: {done.retries} retries, at most {done.max_attempts} attempts for one job, "
            f"{done.seconds:.1f} s, {count / done.seconds:.0f} jobs/s",
        ],
    )
    assert done.code == 0, (failures, done.stderr[-2000:])
    assert (results, lost, duplicate_results, failures) == (count, 0, 0, [])
    assert set(effects.runs) == set(expected), "every job ran, and nothing else did"
    assert effects.duplicates == 0
    assert max(effects.reclaimed.values(), default=0) <= relay.kills, "at most once more per crash"
    assert relay.kills == 2


# --- 3. two replicas sharing Redis, one killed ----------------------------------------------------


@pytest.mark.timeout(120)
async def test_two_replicas_sharing_redis_keep_completing_jobs_when_one_is_killed(
    tmp_path: Path, zone: ZoneServer, redis: RedisServer, capsys: pytest.CaptureFixture[str]
) -> None:
    count = 600
    lease = 2.0  # the claim of a job on the killed replica runs out this soon
    store = ("--store", f"{redis.url}?claim_lease={lease:g}", *JSON_LOGS)
    relay_b = KillableRelay(
        "127.0.0.2", tmp_path / "relay-b.log", (*store, "--instance-name", "relay-b")
    )
    relay_a = KillableRelay(
        "127.0.0.1", tmp_path / "relay-a.log", (*store, "--instance-name", "relay-a")
    )
    logs = [relay_a.log, relay_b.log]
    expected = job_ids("replicas", count)
    try:
        relay_a.port = relay_b.port  # one Service port, two pod addresses
        await relay_b.start()
        await relay_a.start()
        zone.set_records(RELAY_NAME, "A", ["127.0.0.1", "127.0.0.2"], ttl=1)
        batch = asyncio.create_task(
            submit(
                zone,
                relay_a.port,
                *("--kind", "sleep", "--payload", "200", "--count", str(count)),
                *("--concurrency", "16", "--job-id", "replicas"),
            )
        )
        try:
            timeline = await run_schedule(
                [Step(count // 4, "SIGKILL relay-a (its address stays in DNS)", relay_a.kill)],
                logs,
                [batch],
            )
            done = await batch
        finally:
            batch.cancel()
        ran = Effects.read(logs)
        # Every id again, with relay-a still dead and still in DNS: all from Redis.
        again = await submit(
            zone,
            relay_a.port,
            *("--kind", "sleep", "--payload", "200", "--count", str(count)),
            *("--concurrency", "32", "--job-id", "replicas"),
        )
        after = Effects.read(logs)
    finally:
        await relay_a.close()
        await relay_b.close()

    results, lost, duplicate_results, failures = check_results(done, expected)
    served = Counter(line["relay_instance"] for line in done.outcomes)
    replayed = sum(bool(line["replayed"]) for line in again.outcomes)
    report(
        capsys,
        f"{count} jobs to two relays sharing Redis (claim lease {lease:g} s), one SIGKILLed:",
        [
            *timeline.rows,
            f"{results} results, {lost} lost, {duplicate_results} duplicate results, "
            f"{len(done.failures(count))} failed; served by {dict(sorted(served.items()))}",
            f"relay-a ran {len(executions(relay_a.log))}, relay-b ran "
            f"{len(executions(relay_b.log))}",
            ran.describe(),
            f"resubmitted {len(again.outcomes)}: {replayed} replayed, "
            f"{after.total - ran.total} ran again",
            f"bunny: {done.retries} retries, {done.seconds:.1f} s",
        ],
    )
    assert done.code == 0, (failures, done.stderr[-2000:])
    assert (results, lost, duplicate_results, failures) == (count, 0, 0, [])
    assert set(ran.runs) == set(expected)
    assert ran.duplicates == 0
    assert max(ran.reclaimed.values(), default=0) <= 1
    assert served["relay-a"] > 0
    assert served["relay-b"] > 0
    assert again.code == 0, (again.failures(), again.stderr[-2000:])
    assert replayed == count
    assert after.runs == ran.runs, "nothing ran again"


# --- 4. SIGTERM during 50 in-flight jobs ----------------------------------------------------------


@pytest.mark.timeout(60)
async def test_sigterm_during_fifty_jobs_in_flight_completes_all_fifty_and_exits_zero(
    tmp_path: Path, zone: ZoneServer, capsys: pytest.CaptureFixture[str]
) -> None:
    count, grace = 50, 10.0
    relay = KillableRelay(
        "127.0.0.1",
        tmp_path / "relay.log",
        (
            *JSON_LOGS,
            "--log-level",
            "DEBUG",
            "--max-in-flight",
            "64",
            "--grace-period",
            f"{grace:g}",
        ),
        state_dir=tmp_path / "state",
    )
    try:
        await relay.start()
        zone.set_records(RELAY_NAME, "A", ["127.0.0.1"], ttl=1)
        batch = asyncio.create_task(
            submit(
                zone,
                relay.port,
                *("--kind", "sleep", "--payload", "2000", "--count", str(count)),
                *("--concurrency", str(count), "--job-id", "drain", "--attempts", "1"),
            )
        )
        try:
            async with asyncio.timeout(30):
                while len(log_events(relay.log, "job.started")) < count:
                    assert not batch.done(), (await batch).stderr
                    await asyncio.sleep(0.05)
            code, took = await relay.terminate(within=grace + 5)
            done = await batch
        finally:
            batch.cancel()
    finally:
        await relay.close()

    drain = log_events(relay.log, "relay.drain.end")
    results, lost, duplicate_results, failures = check_results(done, job_ids("drain", count))
    report(
        capsys,
        f"SIGTERM with {count} jobs of 2 s in flight (grace period {grace:g} s):",
        [
            f"relay exited {code} after {took:.1f} s: {drain[-1]['message'] if drain else '?'}",
            f"{results} results, {lost} lost, {len(done.failures(count))} failed, "
            f"{done.retries} retries; {len(executions(relay.log))} executions",
        ],
    )
    assert code == 0
    assert took < grace
    assert (results, lost, duplicate_results, failures) == (count, 0, 0, [])
    assert done.retries == 0, "every job finished on the relay that was draining"
    assert sorted(executions(relay.log)) == sorted(job_ids("drain", count))
    assert drain, "relay logged the end of its drain"


# --- 5. the soak ----------------------------------------------------------------------------------


@pytest.mark.soak
@pytest.mark.timeout(420)
async def test_a_soak_of_ten_thousand_jobs_through_cycling_faults_kills_and_resubmissions(
    tmp_path: Path, zone: ZoneServer, capsys: pytest.CaptureFixture[str]
) -> None:
    unary, streamed, resubmitted = 6000, 3000, 1000
    log = tmp_path / "relay.log"
    relay = KillableRelay(
        "127.0.0.1",
        log,
        (*JSON_LOGS, "--grace-period", "5"),
        state_dir=tmp_path / "state",
    )
    job = ("--kind", "sleep", "--payload", "200")
    started = time.monotonic()
    try:
        await relay.start()
        async with fault_proxy(relay.port) as proxy:
            zone.set_records(RELAY_NAME, "A", [proxy.host], ttl=1)
            batches = [
                asyncio.create_task(
                    submit(
                        zone,
                        proxy.port,
                        *job,
                        *("--count", str(unary), "--concurrency", "32", "--job-id", "soak-u"),
                        within=300,
                    )
                ),
                asyncio.create_task(
                    submit(
                        zone,
                        proxy.port,
                        *job,
                        *("--count", str(streamed), "--concurrency", "32", "--job-id", "soak-s"),
                        "--stream",
                        within=300,
                    )
                ),
            ]

            async def drain_and_restart() -> None:
                code, _ = await relay.terminate(within=15)
                assert code == 0, "relay drains and exits 0 on SIGTERM"
                await relay.start()

            try:
                steps: list[Step] = []
                for round_ in range(2):
                    steps += [hold(proxy, fault, 2) for fault in CYCLE]
                    steps.append(
                        kill_and_restart(relay)
                        if round_ == 0
                        else Step(0, "SIGTERM relay (drain), restart it", drain_and_restart)
                    )
                    steps.append(hold(proxy, REFUSED_OUTAGE if round_ == 0 else SILENT_OUTAGE, 4))
                for n, step in enumerate(steps):
                    step.after_runs = 300 * (n + 1)
                timeline = await run_schedule(steps, [log], batches)
                done = [await batch for batch in batches]
            finally:
                for batch in batches:
                    batch.cancel()
            ran = Effects.read([log])
            # The first ids of the unary batch again, to the relay that was killed and restarted.
            again = await submit(
                zone,
                proxy.port,
                *job,
                *("--count", str(resubmitted), "--concurrency", "64", "--job-id", "soak-u"),
            )
            after = Effects.read([log])
    finally:
        await relay.close()
    seconds = time.monotonic() - started

    expected = [job_ids("soak-u", unary), job_ids("soak-s", streamed)]
    checks = [check_results(finished, ids) for finished, ids in zip(done, expected, strict=True)]
    total = unary + streamed + resubmitted
    replayed = sum(bool(line["replayed"]) for line in again.outcomes)
    report(
        capsys,
        f"soak: {total:,} jobs (unary, streamed, resubmitted) through DNS -> Toxiproxy -> relay:",
        [
            *timeline.rows,
            *(
                f"{name}: {results} results, {lost} lost, {dup} duplicate results, "
                f"{len(batch.failures(len(batch.outcomes)))} failed, {batch.retries} retries, "
                f"{batch.seconds:.1f} s"
                for name, batch, (results, lost, dup, _) in zip(
                    ("unary", "streamed"), done, checks, strict=True
                )
            ),
            f"resubmitted {len(again.outcomes)}: {replayed} replayed, "
            f"{after.total - ran.total} ran again, {again.seconds:.1f} s",
            ran.describe(),
            f"DNS: {len(zone.log)} queries answered for {RELAY_NAME} (TTL 1 s)",
            f"{total:,} jobs in {seconds:.1f} s: {total / seconds:.0f} jobs/s",
        ],
    )
    for finished, (results, lost, dup, failures), ids in zip(done, checks, expected, strict=True):
        assert finished.code == 0, (failures, finished.stderr[-2000:])
        assert (results, lost, dup, failures) == (len(ids), 0, 0, [])
    assert set(ran.runs) == {job_id for ids in expected for job_id in ids}
    assert ran.duplicates == 0
    assert max(ran.reclaimed.values(), default=0) <= 1
    assert again.code == 0, (again.failures(), again.stderr[-2000:])
    assert replayed == resubmitted
    assert after.runs == ran.runs, "nothing ran again"
