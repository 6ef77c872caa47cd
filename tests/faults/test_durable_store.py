"""Durable idempotency with real relay processes and the real bunny command.

Effects are counted from outside: relay, started with ``--log-format json --log-executions``,
writes one ``job.executed`` line per handler run, flushed before the result is
stored, so a count survives SIGKILL. Each test prints its numbers.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path
from typing import Any

import grpc
import pytest

from lab.processes import RelayProcess, relay_process, run_bunny
from lab.redisserver import RedisServer
from tests.relay.harness import error_info, job, local_relay
from tests.relaylog import executions, log_events, wait_for_event

JSON_LOGS = ("--log-format", "json", "--log-executions")


async def _submit(target: str, *args: str) -> tuple[int, list[dict[str, Any]], str]:
    code, out, err = await run_bunny("submit", "--target", target, "--json", *args, timeout=90)
    return code, [json.loads(line) for line in out.splitlines() if line.strip()], err


def _target(relay: RelayProcess) -> str:
    return f"{relay.host}:{relay.port}"


async def _kill(relay: RelayProcess) -> None:
    relay.process.send_signal(signal.SIGKILL)
    await relay.process.wait()


async def test_a_relay_restarted_on_the_same_sqlite_file_replays_and_runs_nothing_again(
    tmp_path: Path,
) -> None:
    state, log = tmp_path / "state", tmp_path / "relay.log"
    batch = ("--kind", "sha256", "--payload", "abc", "--count", "20", "--job-id", "restart")
    async with relay_process("127.0.0.1:0", args=JSON_LOGS, state_dir=state, log_path=log) as first:
        code, ran, err = await _submit(_target(first), *batch)
        assert code == 0, err
        await _kill(first)  # no drain: only what was committed before answering counts

    async with relay_process("127.0.0.1:0", args=JSON_LOGS, state_dir=state, log_path=log) as again:
        code, replayed, err = await _submit(_target(again), *batch)
        assert code == 0, err

    ran_effects = executions(log)
    print(
        f"\nsqlite restart: 20 jobs, {len(ran_effects)} executions, "
        f"{sum(r['replayed'] for r in replayed)} replayed after SIGKILL and restart"
    )
    assert sorted(ran_effects) == sorted(f"restart-{n}" for n in range(1, 21))
    assert not any(line["replayed"] for line in ran)
    assert all(line["replayed"] for line in replayed)
    assert {line["output"] for line in replayed} == {line["output"] for line in ran}


async def test_a_job_running_when_relay_was_killed_runs_again_once_after_the_restart(
    tmp_path: Path,
) -> None:
    state, log = tmp_path / "state", tmp_path / "relay.log"
    args = (*JSON_LOGS, "--log-level", "DEBUG")
    submit: asyncio.Task[tuple[int, list[dict[str, Any]], str]] | None = None
    try:
        async with relay_process("127.0.0.1:0", args=args, state_dir=state, log_path=log) as first:
            port = first.port
            # bunny keeps retrying while relay is down, and reaches the restarted one.
            submit = asyncio.create_task(
                _submit(
                    f"127.0.0.1:{port}",
                    *("--kind", "sleep", "--payload", "1500", "--job-id", "interrupted"),
                )
            )
            await wait_for_event(log, "job.started", job_id="interrupted")
            await _kill(first)
        async with relay_process(f"127.0.0.1:{port}", args=args, state_dir=state, log_path=log):
            code, (line,), err = await submit
            assert code == 0, err
            code, (again,), err = await _submit(
                f"127.0.0.1:{port}",
                *("--kind", "sleep", "--payload", "1500", "--job-id", "interrupted"),
            )
            assert code == 0, err
    finally:
        if submit is not None and not submit.done():
            submit.cancel()

    reclaimed = log_events(log, "job.reclaimed")
    print(
        f"\nSIGKILL mid-job: executions {executions(log)}, reclaimed {len(reclaimed)}, "
        f"bunny attempts {line['attempts']}"
    )
    assert executions(log) == ["interrupted"], "killed mid-sleep: only the re-run finished"
    assert [r["job_id"] for r in reclaimed] == ["interrupted"]
    assert line["status"] == "SUCCEEDED"
    assert line["attempts"] > 1
    assert again["replayed"] is True


async def test_two_relays_sharing_redis_replay_each_others_jobs_even_after_one_is_killed(
    tmp_path: Path, redis: RedisServer
) -> None:
    lease = 2.0  # the default (10 s) would only make this test wait longer
    store = ("--store", f"{redis.url}?claim_lease={lease}", *JSON_LOGS, "--log-level", "DEBUG")
    log_a, log_b = tmp_path / "relay-a.log", tmp_path / "relay-b.log"
    async with (
        relay_process(
            "127.0.0.1:0", args=(*store, "--instance-name", "relay-a"), log_path=log_a
        ) as relay_a,
        relay_process(
            "127.0.0.1:0", args=(*store, "--instance-name", "relay-b"), log_path=log_b
        ) as relay_b,
    ):
        batch = ("--kind", "sha256", "--payload", "x", "--count", "10", "--job-id", "shared")
        code, _, err = await _submit(_target(relay_a), *batch)
        assert code == 0, err
        code, on_b, err = await _submit(_target(relay_b), *batch)
        assert code == 0, err

        # A job running on relay-a when it is killed: relay-b runs it once the claim's
        # lease runs out, and not before.
        long = ("--kind", "sleep", "--payload", "1000", "--job-id", "orphan")
        running = asyncio.create_task(_submit(_target(relay_a), *long, "--attempts", "1"))
        await wait_for_event(log_a, "job.started", job_id="orphan")
        await _kill(relay_a)
        await running
        started = asyncio.get_running_loop().time()
        code, (orphan,), err = await _submit(_target(relay_b), *long)
        waited = asyncio.get_running_loop().time() - started
        assert code == 0, err

    print(
        f"\nredis shared by 2 relays: relay-a ran {len(executions(log_a))}, relay-b ran "
        f"{len(executions(log_b))}; the orphan ran on relay-b after {waited:.1f} s"
    )
    assert sorted(executions(log_a)) == sorted(f"shared-{n}" for n in range(1, 11))
    assert executions(log_b) == ["orphan"]
    assert all(line["replayed"] and line["relay_instance"] == "relay-a" for line in on_b)
    assert orphan["status"] == "SUCCEEDED"
    assert orphan["relay_instance"] == "relay-b"
    assert waited < lease + 5


async def test_an_unusable_state_directory_stops_relay_at_start_with_a_clear_error(
    tmp_path: Path,
) -> None:
    (tmp_path / "a-file").write_text("")
    for args in (
        ["--state-dir", str(tmp_path / "a-file")],
        ["--store", f"sqlite:{tmp_path}/a-file/jobs.sqlite3"],
        ["--state-dir", "/proc/relay"],
    ):
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "relay",
            "serve",
            "--listen",
            "127.0.0.1:0",
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(process.communicate(), timeout=30)
        message = err.decode()
        assert process.returncode == 1, message
        assert "SQLite store" in message, message
        assert "--state-dir" in message, message
        assert "Traceback" not in message
        assert b"listening" not in out


async def test_relay_refuses_jobs_while_its_store_is_down_and_the_client_may_retry(
    redis: RedisServer,
) -> None:
    from relay.stores.spec import StoreSpec

    async with local_relay(store=StoreSpec("redis", redis.url)) as local:
        assert (await local.stub.Run(job("before"))).output == b""
        redis.process.kill()
        await redis.process.wait()
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await local.stub.Run(job("during"), timeout=20)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    assert error_info(refused.value).reason == "STORE_UNAVAILABLE"
