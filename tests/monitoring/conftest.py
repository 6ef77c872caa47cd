"""promtool, pinned, from `make monitoring-tools`: a test that needs it fails without it."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "deploy" / "monitoring"
RULE_FILES = sorted(MONITORING.glob("*.rules.yaml"))
RULE_TESTS = sorted(Path(__file__).parent.glob("*.rules.test.yaml"))
PROMTOOL = ROOT / ".tools" / "bin" / "promtool"


def promtool(args: Sequence[str | Path], *, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """Run promtool with ``args``; fails the test, saying how to install it, when it is missing."""
    if not os.access(PROMTOOL, os.X_OK):
        pytest.fail(f"{PROMTOOL} is missing: run `make monitoring-tools`", pytrace=False)
    return subprocess.run(
        [PROMTOOL, *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
