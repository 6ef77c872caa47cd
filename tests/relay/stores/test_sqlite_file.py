"""Every way the SQLite store's file cannot be opened stops relay with one clear message.

The message names the file, the user relay runs as and the fix (``--state-dir``,
``fsGroup`` in Kubernetes, a volume owned by relay's user, or ``--store memory``);
relay exits 1 and prints no traceback. relay runs as a user without privileges
(tests/nonroot.py), since root would pass the permission checks that are the subject.
"""

from __future__ import annotations

import sqlite3
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from lab.processes import child_env
from tests.nonroot import (
    IS_ROOT,
    Finished,
    as_nonroot,
    group_id,
    in_tmpfs,
    run,
    shared_dir,
    user_id,
)

STORE = "jobs.sqlite3"


@pytest.fixture
def scratch() -> Iterator[Path]:
    with shared_dir("relay-store-") as path:
        yield path


def _relay(state_dir: Path) -> list[str]:
    return [
        sys.executable,
        *("-m", "relay", "serve", "--listen", "127.0.0.1:0", "--state-dir", str(state_dir)),
    ]


async def _serve_as_nonroot(
    state_dir: Path, wrap: Callable[[list[str]], list[str]] = list
) -> Finished:
    return await run(wrap(as_nonroot(_relay(state_dir))), env=child_env())


def _assert_one_clear_message(finished: Finished, path: Path, problem: str) -> None:
    assert finished.code == 1, finished.err
    assert "Traceback" not in finished.err
    errors = [line for line in finished.err.splitlines() if "ERROR" in line]
    assert len(errors) == 1, finished.err
    (message,) = errors
    assert f"cannot open the SQLite store {path}: {problem}" in message
    assert f"relay runs as uid {user_id()}" in message
    assert "--state-dir (RELAY_STATE_DIR)" in message
    assert f"fsGroup: {group_id()}" in message
    assert f"a volume owned by uid {user_id()}" in message
    assert "--store memory" in message


async def test_a_state_directory_that_cannot_be_created(scratch: Path) -> None:
    parent = scratch / "locked"
    parent.mkdir(mode=0o555)
    state = parent / "state"
    finished = await _serve_as_nonroot(state)
    _assert_one_clear_message(
        finished, state / STORE, f"cannot create its directory: permission denied on {state}"
    )


async def test_a_state_directory_the_user_cannot_enter(scratch: Path) -> None:
    # As podman's --tmpfs and a Kubernetes volume without fsGroup leave relay's image
    # (owned by root, mode 0750): closed to relay's user.
    state = scratch / "state"
    state.mkdir(mode=0o000)
    finished = await _serve_as_nonroot(state)
    _assert_one_clear_message(
        finished, state / STORE, f"permission denied: this user cannot enter {state}"
    )


async def test_a_state_directory_the_user_cannot_write(scratch: Path) -> None:
    state = scratch / "state"
    state.mkdir(mode=0o555)
    finished = await _serve_as_nonroot(state)
    _assert_one_clear_message(finished, state / STORE, f"this user cannot create files in {state}")


@pytest.mark.parametrize("mode", [0o000, 0o444], ids=["unreadable", "read-only"])
async def test_a_store_file_the_user_cannot_read_and_write(scratch: Path, mode: int) -> None:
    state = scratch / "state"
    state.mkdir(mode=0o777)
    state.chmod(0o777)  # past the umask
    sqlite3.connect(state / STORE).close()
    (state / STORE).chmod(mode)
    finished = await _serve_as_nonroot(state)
    _assert_one_clear_message(
        finished, state / STORE, "this user cannot read and write it (owner uid "
    )
    assert f"mode {mode:04o})" in finished.err


async def test_a_directory_in_place_of_the_store_file(scratch: Path) -> None:
    state = scratch / "state"
    (state / STORE).mkdir(parents=True)
    finished = await _serve_as_nonroot(state)
    _assert_one_clear_message(finished, state / STORE, "it is a directory, not a file")


async def test_a_file_in_place_of_the_state_directory(scratch: Path) -> None:
    state = scratch / "state"
    state.write_text("not a directory")
    finished = await _serve_as_nonroot(state)
    _assert_one_clear_message(
        finished, state / STORE, f"cannot create its directory: a part of {state} is a file"
    )


root_only = pytest.mark.skipif(not IS_ROOT, reason="mounting a tmpfs needs root")


@pytest.mark.root
@root_only
async def test_a_read_only_filesystem(scratch: Path) -> None:
    state = scratch / "state"
    state.mkdir()
    finished = await _serve_as_nonroot(state, lambda argv: in_tmpfs(argv, state, read_only=True))
    _assert_one_clear_message(finished, state / STORE, f"{state} is on a read-only filesystem")


@pytest.mark.root
@root_only
async def test_a_full_disk(scratch: Path) -> None:
    state = scratch / "state"
    state.mkdir()
    finished = await _serve_as_nonroot(state, lambda argv: in_tmpfs(argv, state, full=True))
    _assert_one_clear_message(finished, state / STORE, "the disk is full")
