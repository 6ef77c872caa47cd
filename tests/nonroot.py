"""Running a program as a user without privileges, for tests whose subject is a permission.

Root passes every permission check, so a file that "cannot be read" can be read
by a test that runs as root, as CI does. :func:`as_nonroot` runs a command as
:data:`NONROOT_UID` (the uid relay's and bunny's images run as) with no
supplementary groups, through ``setpriv``; a test run by a user that is not
root already has no privileges, and its commands run unchanged.

Files a test prepares for such a command live in :func:`shared_dir`, which the
unprivileged user can reach (pytest's own temporary folders are private to
root). Tests deny access with modes that stop everyone but root (``0o000``
for a file, ``0o555`` for a directory), so the same test holds both ways.

:func:`in_tmpfs` runs a command with a tmpfs of its own mounted in a private
mount namespace: a read-only filesystem, or a full disk. Nothing is mounted
where other processes can see it, and it is gone when the command ends. It
needs root (tests that use it are marked ``root``).
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from lab.processes import run_command

NONROOT_UID = 10001
"""The uid (and gid) that relay's and bunny's images run as."""

IS_ROOT = os.geteuid() == 0


def user_id() -> int:
    """The uid that :func:`as_nonroot` runs commands as."""
    return NONROOT_UID if IS_ROOT else os.geteuid()


def group_id() -> int:
    """The gid that :func:`as_nonroot` runs commands as."""
    return NONROOT_UID if IS_ROOT else os.getegid()


def as_nonroot(argv: Sequence[str]) -> list[str]:
    """``argv`` run as a user without privileges."""
    if not IS_ROOT:
        return list(argv)
    setpriv = shutil.which("setpriv")
    assert setpriv, "setpriv (util-linux) is missing: it runs commands as another user"
    uid = str(NONROOT_UID)
    return [setpriv, f"--reuid={uid}", f"--regid={uid}", "--clear-groups", *argv]


def in_tmpfs(
    argv: Sequence[str], mountpoint: Path, *, read_only: bool = False, full: bool = False
) -> list[str]:
    """``argv`` run with a small tmpfs on ``mountpoint``, read-only or filled to the last
    byte, in a mount namespace of its own (root only)."""
    assert IS_ROOT, "mounting a tmpfs needs root"
    steps = ['mount -t tmpfs -o size=64k,mode=1777 tmpfs "$0"']
    if full:
        # Until the device says no more: the write fails, the file stays.
        steps.append('cat /dev/zero > "$0/filler" 2>/dev/null || true')
    if read_only:
        steps.append('mount -o remount,ro "$0"')
    steps.append('exec "$@"')
    script = " && ".join(steps)
    return [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        script,
        str(mountpoint),
        *argv,
    ]


@contextmanager
def shared_dir(prefix: str = "nonroot-") -> Iterator[Path]:
    """A scratch folder the unprivileged user can reach; removed afterwards, whatever the
    test did to the modes inside it."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    try:
        yield path
    finally:
        for folder, dirs, files in os.walk(path):
            for name in dirs + files:
                child = Path(folder) / name
                if not child.is_symlink():
                    child.chmod(child.stat().st_mode | stat.S_IRWXU)
        shutil.rmtree(path)


@dataclass(frozen=True)
class Finished:
    code: int
    out: str
    err: str


async def run(
    argv: Sequence[str], *, env: Mapping[str, str] | None = None, timeout: float = 30.0
) -> Finished:
    """Run ``argv`` to its end (killed after ``timeout`` seconds) and return what it said."""
    return Finished(*await run_command(argv, env=env, timeout=timeout, cwd="/"))
