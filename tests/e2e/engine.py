"""The container engine the end-to-end tests drive: the one ``make images`` and ``make up``
use (tools/engine.sh picks it), with the project's podman settings.

Every name a test creates carries a per-run suffix (:func:`unique`), and every helper that
creates something is a context manager that removes it, even when the test fails.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
PODMAN_CONF = ROOT / "tools" / "podman" / "containers.conf"


def unique(prefix: str) -> str:
    """A name no other test run uses: ``PREFIX-<8 hex digits>``."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def environment(**extra: str) -> dict[str, str]:
    """This process's environment with the project's podman settings (and ``extra``)."""
    return {**os.environ, "CONTAINERS_CONF": str(PODMAN_CONF), **extra}


@functools.cache
def engine() -> str:
    """``podman`` or ``docker``, as tools/engine.sh decides; fails if there is neither."""
    result = subprocess.run(
        ["bash", "-c", "source tools/engine.sh && echo $ENGINE"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=environment(),
        timeout=30,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(f"{result.stderr.strip()} (`make test` installs podman)", pytrace=False)
    return result.stdout.strip()


def run(
    args: Sequence[str], *, timeout: float = 120, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """``ENGINE ARGS...``; with ``check``, a failure is an assertion naming what it said."""
    result = subprocess.run(
        [engine(), *args],
        capture_output=True,
        text=True,
        env=environment(),
        timeout=timeout,
        check=False,
    )
    if check:
        assert result.returncode == 0, (
            f"{engine()} {' '.join(args)}: exit {result.returncode}\n{result.stdout}{result.stderr}"
        )
    return result


def inspect(kind: str, name: str) -> dict[str, Any]:
    """``ENGINE KIND inspect NAME``, the one object it describes."""
    found = json.loads(run([kind, "inspect", name]).stdout)
    assert len(found) == 1, found
    return dict(found[0])


def require_image(name: str, make_target: str) -> dict[str, Any]:
    """The image's description; fails (never skips) saying which target builds it."""
    if run(["image", "inspect", name], check=False).returncode != 0:
        pytest.fail(f"{name} is not built: run `make {make_target}`", pytrace=False)
    return inspect("image", name)


@contextmanager
def network(name: str) -> Iterator[str]:
    """A bridge network of this test run's own, removed afterwards."""
    run(["network", "create", name])
    try:
        yield name
    finally:
        run(["network", "rm", "--force", name], check=False)


@contextmanager
def volume(name: str) -> Iterator[str]:
    """A named volume, removed afterwards."""
    run(["volume", "create", name])
    try:
        yield name
    finally:
        run(["volume", "rm", "--force", name], check=False)


@contextmanager
def container(name: str, args: Sequence[str]) -> Iterator[str]:
    """``ENGINE run --detach --name NAME ARGS...``, removed (with its log printed on
    failure) afterwards."""
    run(["run", "--detach", "--name", name, *args])
    try:
        yield name
    except BaseException:
        logs = run(["logs", "--tail", "30", name], check=False)
        print(f"--- {name}'s log\n{logs.stdout}{logs.stderr}")
        raise
    finally:
        run(["rm", "--force", "--time", "5", name], check=False, timeout=60)
