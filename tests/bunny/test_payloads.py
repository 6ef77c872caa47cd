"""Payloads from files and standard input, sent as they are, within a size relay takes; and
what ``bunny submit``, ``resolve`` and ``bench`` print for people when a job or a lookup
fails. Each test runs the real commands against a real relay (and a real DNS server)."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

from lab.dnsserver import ZoneServer
from lab.processes import child_env, run_bunny, run_command
from tests.bunny.conftest import RELAY
from tests.conftest import StartRelay

MiB = 1024 * 1024


async def _bunny_with_stdin(*args: str, stdin: bytes) -> tuple[int, str, str]:
    """``bunny ARGS`` with ``stdin`` on its standard input."""
    return await run_command(
        [sys.executable, "-m", "bunny", *args], env=child_env(), stdin=stdin, timeout=60
    )


# --- payloads -------------------------------------------------------------------------------


async def test_a_binary_file_larger_than_argv_allows_is_sent_byte_for_byte(
    start_relay: StartRelay, tmp_path: Path
) -> None:
    # Past what one argument can hold (128 KiB), and no text: every byte value, NULs too.
    data = bytes(range(256)) * 2048 + os.urandom(300_000)
    payload = tmp_path / "payload.bin"
    payload.write_bytes(data)

    async with start_relay(args=["--store", "memory"]) as relay:
        target = f"127.0.0.1:{relay.port}"
        code, out, err = await run_bunny(
            "submit", "--target", target, "--kind", "sha256", "--payload-file", str(payload),
            "--json", timeout=60,
        )  # fmt: skip
        echoed = await run_bunny(
            "submit", "--target", target, "--payload-file", str(payload), timeout=60
        )

    assert code == 0, err
    assert json.loads(out)["output"] == hashlib.sha256(data).hexdigest()
    assert echoed[0] == 0, echoed[2]
    assert f"output: {len(data)} bytes, not UTF-8 text" in echoed[1]


async def test_standard_input_is_the_payload_with_a_dash(start_relay: StartRelay) -> None:
    data = os.urandom(200_000)
    async with start_relay(args=["--store", "memory"]) as relay:
        code, out, err = await _bunny_with_stdin(
            "submit", "--target", f"127.0.0.1:{relay.port}", "--kind", "sha256",
            "--payload-file", "-", "--json", stdin=data,
        )  # fmt: skip

    assert code == 0, err
    assert json.loads(out)["output"] == hashlib.sha256(data).hexdigest()


async def test_a_payload_over_the_limit_is_refused_before_anything_is_sent(
    tmp_path: Path,
) -> None:
    # The target is nothing: a payload refused at start never gets as far as dialling it.
    big = tmp_path / "big.bin"
    big.write_bytes(b"x" * (MiB + 1))
    target = ("submit", "--target", "127.0.0.1:9")

    code, out, err = await run_bunny(*target, "--payload-file", str(big), timeout=30)
    piped = await _bunny_with_stdin(*target, "--payload-file", "-", stdin=b"x" * (MiB + 1))

    assert code == 2, err
    assert not out
    assert "Traceback" not in err
    assert err.strip() == (
        f"bunny: error: --payload-file {big} is {MiB + 1} bytes, over --max-payload-bytes "
        f"{MiB} (BUNNY_MAX_PAYLOAD_BYTES), the limit of a relay with default settings; send "
        "less, or, when relay runs with a larger --max-payload-bytes, give bunny the same"
    )
    assert piped[0] == 2, piped
    assert f"the payload on standard input is more than {MiB} bytes" in piped[2]


async def test_payload_at_file_is_refused_with_the_flag_that_sends_the_file() -> None:
    code, out, err = await run_bunny(
        "submit", "--target", "127.0.0.1:9", "--payload", "@job.json", timeout=30
    )

    assert code == 2
    assert not out
    assert "--payload sends its text as it is, not a file's content" in err
    assert "give --payload-file job.json to send the file" in err


async def test_payload_and_payload_file_together_are_refused(tmp_path: Path) -> None:
    (tmp_path / "p").write_bytes(b"x")
    code, _, err = await run_bunny(
        "submit", "--target", "127.0.0.1:9", "--payload", "x", "--payload-file",
        str(tmp_path / "p"), timeout=30,
    )  # fmt: skip

    assert code == 2
    assert "--payload and --payload-file cannot both be given" in err


async def test_relay_refusing_a_payload_over_its_limit_says_both_sizes_even_streamed(
    start_relay: StartRelay, tmp_path: Path
) -> None:
    """bunny told to send more than relay takes: relay's own check refuses it (payloads up to
    about twice relay's limit), and past that relay's gRPC layer, whose words bunny turns
    into the sizes and the fix instead of "Received message larger than max"."""
    over, far_over = tmp_path / "over.bin", tmp_path / "far.bin"
    over.write_bytes(os.urandom(150_000))
    far_over.write_bytes(os.urandom(400_000))
    lines: dict[tuple[str, bool], dict[str, object]] = {}
    async with start_relay(args=["--store", "memory", "--max-payload-bytes", "100000"]) as relay:
        for path in (over, far_over):
            for stream in (False, True):
                code, out, err = await run_bunny(
                    "submit", "--target", f"127.0.0.1:{relay.port}", "--payload-file",
                    str(path), "--max-payload-bytes", str(MiB), "--json",
                    *(["--stream"] if stream else []), timeout=60,
                )  # fmt: skip
                assert code == 1, err
                lines[(path.name, stream)] = json.loads(out)

    for stream in (False, True):
        error = lines[("over.bin", stream)]["error"]
        assert isinstance(error, dict)
        assert (error["type"], error["reason"]) == ("JobRejected", "PAYLOAD_TOO_LARGE")
        assert (
            "payload is 150000 bytes, over this relay's limit of 100000 bytes" in (error["message"])
        )
        error = lines[("far.bin", stream)]["error"]
        assert isinstance(error, dict)
        assert (error["type"], error["reason"]) == ("JobRejected", "PAYLOAD_TOO_LARGE")
        message = str(error["message"])
        assert "larger than max" not in message
        assert "the job is 4000" in message  # the payload and its request's framing
        assert "more than relay takes in one message (265536 bytes" in message
        assert "start relay with a larger --max-payload-bytes" in message


# --- text output ------------------------------------------------------------------------------


async def test_text_output_marks_replays_and_names_no_instance_for_a_rejected_job(
    start_relay: StartRelay,
) -> None:
    async with start_relay(args=["--store", "memory"]) as relay:
        target = ("submit", "--target", f"127.0.0.1:{relay.port}")
        first = await run_bunny(*target, "--job-id", "same", "--payload", "hi", timeout=60)
        again = await run_bunny(*target, "--job-id", "same", "--payload", "hi", timeout=60)
        rejected = await run_bunny(*target, "--kind", "no-such-kind", timeout=60)

    assert first[0] == again[0] == 0
    assert "replayed" not in first[1] + first[2]
    head = again[1].splitlines()[0]
    assert head.startswith("SUCCEEDED same ")
    assert "  replayed  " in head
    assert "(1 replayed: relay had run those job ids already)" in again[2]
    assert rejected[0] == 1
    head = rejected[1].splitlines()[0]
    assert head.startswith("FAILED ")
    assert f"relay=127.0.0.1:{relay.port}  attempts=1" in head
    assert "None" not in rejected[1]


async def test_resolve_lists_the_queries_it_sent_when_the_lookup_fails(dns: ZoneServer) -> None:
    missing = f"missing.{RELAY.partition('.')[2]}"
    code, out, err = await run_bunny(
        "resolve", missing, "--nameserver", str(dns.address), "--hosts-file", "none",
        "--family", "ipv4", timeout=30,
    )  # fmt: skip

    assert code == 1
    assert not out
    lines = err.strip().splitlines()
    assert lines[0] == f"NameNotFound: {missing}: NXDOMAIN from {dns.address}"
    assert lines[1] == "queries sent:"
    assert lines[2].startswith(f"  {missing} A @{dns.address} attempt 1: NXDOMAIN in ")
    assert lines[-1].startswith("likely cause: ")


async def test_bench_says_why_relay_rejected_its_jobs(start_relay: StartRelay) -> None:
    async with start_relay(args=["--store", "memory", "--max-payload-bytes", "1000"]) as relay:
        code, out, err = await run_bunny(
            "bench", "--target", f"127.0.0.1:{relay.port}", "--payload-bytes", "2000",
            "--duration", "0.5", "--warmup", "0", "--concurrency", "2",
            env={"OTEL_TRACES_SAMPLER": "always_off"}, timeout=60,
        )  # fmt: skip

    assert code == 1, err
    (row,) = [line for line in out.splitlines() if line.startswith("failures")]
    count, _, why = row.removeprefix("failures").strip().partition(" ")
    assert int(count) > 0
    assert why == (
        "JobRejected RESOURCE_EXHAUSTED PAYLOAD_TOO_LARGE: payload is 2000 bytes, over this "
        "relay's limit of 1000 bytes (--max-payload-bytes, RELAY_MAX_PAYLOAD_BYTES)"
    )
