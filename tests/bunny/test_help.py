"""``bunny --help`` and each command's ``--help`` stay quick: they load neither gRPC nor
OpenTelemetry nor the resolver, only the parser and the config it is built from
(docs/benchmarks.md has the timings)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from bunny.cli import COMMANDS

# What a command loads to run, and help must not: each costs tens of milliseconds.
HEAVY = ("grpc", "opentelemetry", "google", "tenacity", "aiodns", "pycares", "asyncio", "rich")
PROBE = """
import json, sys
from bunny.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
heavy = {name.split(".")[0] for name in sys.modules} & set(%r)
print(json.dumps(sorted(heavy)), file=sys.stderr)
"""


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help_loads_nothing_a_command_needs_only_to_run(command: str | None) -> None:
    argv = [*([command] if command else []), "--help"]
    done = subprocess.run(
        [sys.executable, "-c", PROBE % (HEAVY,), *argv],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )

    assert "usage: bunny" in done.stdout
    assert json.loads(done.stderr.strip().splitlines()[-1]) == []
