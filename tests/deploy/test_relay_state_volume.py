"""relay's pod, as the chart renders it, starts on a volume that root owns.

No kubelet runs here, so the test does to a directory what the kubelet does to a volume
for the rendered pod spec, then starts a real relay the way the container runtime would:

- a volume is root's when the pod starts: a fresh filesystem's root is root's and 0755
  (a persistent volume, or podman's ``--tmpfs``); an emptyDir is root's and 0777;
- with the pod's ``fsGroup`` the kubelet gives every file in the volume that group, adds
  read and write for the group (read only on a read-only mount) and, on directories,
  search and setgid, so new files inherit the group (Kubernetes docs, "Configure a
  Security Context for a Pod or Container"; ``SetVolumeOwnership`` in the kubelet);
- the container's process runs as ``runAsUser``:``runAsGroup`` with ``fsGroup`` and
  ``supplementalGroups`` as its supplementary groups, with the container's environment.

relay started that way must serve a job and create its SQLite store in the volume; without
``fsGroup`` it must stop at once with a message naming the store and the fix, exit 1, and
no traceback. Needs root (to own files and to start a process as another user), as CI has.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import sqlite3
import stat
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from lab.processes import child_env, run_bunny, run_module
from tests.deploy.tools import notes, pod_spec, template

pytestmark = pytest.mark.timeout(120)

SITE_PACKAGES = sysconfig.get_path("purelib")
"""This environment's packages (and the path entries that make the project importable)."""
RUN_RELAY = (
    "import runpy, site; "
    f"site.addsitedir({SITE_PACKAGES!r}); "
    "runpy.run_module('relay', run_name='__main__', alter_sys=True)"
)
"""``python -m relay`` for an interpreter outside this virtual environment."""


@dataclass(frozen=True)
class RenderedRelay:
    """What the chart's Deployment says about relay's process and its state volume."""

    uid: int
    gid: int
    fs_group: int | None
    supplemental_groups: tuple[int, ...]
    state_dir: str
    volume: dict[str, Any]
    read_only: bool
    env: dict[str, str]

    @property
    def groups(self) -> list[int]:
        """The process's supplementary groups, as the kubelet gives them."""
        return [g for g in (self.fs_group, *self.supplemental_groups) if g is not None]


def rendered_relay(set_values: Mapping[str, Any] | None = None) -> RenderedRelay:
    spec = pod_spec(template("relay", set_values=set_values).one("Deployment"))
    (container,) = spec["containers"]
    pod, own = spec["securityContext"], container["securityContext"]
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    state_dir = env["RELAY_STATE_DIR"]
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == state_dir]
    (volume,) = [v for v in spec["volumes"] if v["name"] == mount["name"]]
    return RenderedRelay(
        uid=int(own.get("runAsUser", pod.get("runAsUser"))),
        gid=int(own.get("runAsGroup", pod.get("runAsGroup"))),
        fs_group=pod.get("fsGroup"),
        supplemental_groups=tuple(pod.get("supplementalGroups", ())),
        state_dir=state_dir,
        volume=volume,
        read_only=bool(mount.get("readOnly", False)),
        env=env,
    )


def apply_fs_group(volume: Path, fs_group: int | None, *, read_only: bool) -> None:
    """The kubelet's ownership change of a volume for the pod's fsGroup (none: nothing)."""
    if fs_group is None:
        return
    for path in [volume, *volume.rglob("*")]:
        os.lchown(path, -1, fs_group)
        if path.is_symlink():
            continue
        mask = 0o440 if read_only else 0o660
        if path.is_dir():
            mask |= stat.S_ISGID | 0o110
        os.chmod(path, stat.S_IMODE(path.stat().st_mode) | mask)


@pytest.fixture
def scratch() -> Iterator[Path]:
    """A directory every user may pass through (pytest's own tmp_path is root's 0700)."""
    if os.geteuid() != 0:
        pytest.fail("this test needs root: it owns files as root and starts relay as 10001")
    path = Path(tempfile.mkdtemp(prefix="relay-volume-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def root_owned_volume(scratch: Path, kind: str) -> Path:
    """A volume as it is before the kubelet's ownership change: root's, fresh."""
    volume = scratch / "volume"
    volume.mkdir()
    volume.chmod({"filesystem root": 0o755, "emptyDir": 0o777}[kind])
    assert (volume.stat().st_uid, volume.stat().st_gid) == (0, 0)
    return volume


def python_for(relay: RenderedRelay) -> str:
    """An interpreter relay's user can run with this project importable.

    This environment's own first; a virtual environment whose base interpreter lives
    under root's home (pyenv) is out of that user's reach, and then the system's Python
    of the same version runs it with this environment's packages added.
    """
    probe = f"import site; site.addsitedir({SITE_PACKAGES!r}); import relay.cli, sqlite3, grpc"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    tried = []
    for python in (sys.executable, f"/usr/bin/python{version}"):
        try:
            result = subprocess.run(
                [python, "-c", probe],
                user=relay.uid,
                group=relay.gid,
                extra_groups=relay.groups,
                capture_output=True,
                text=True,
                timeout=60,
                cwd="/",
                check=False,
            )
        except OSError as error:
            tried.append(f"{python}: {error}")
            continue
        if result.returncode == 0:
            return python
        tried.append(f"{python}: {result.stderr.strip().splitlines()[-1:]}")
    pytest.fail(f"no Python that UID {relay.uid} can run imports relay: {'; '.join(tried)}")


def read(log: Path) -> str:
    return log.read_text(encoding="utf-8", errors="replace")


async def start_relay(relay: RenderedRelay, volume: Path, log: Path) -> asyncio.subprocess.Process:
    """relay as the container would run it: its user and groups, the chart's environment,
    the volume at its state directory, listening on loopback."""
    env = child_env(
        {
            **relay.env,
            "RELAY_LISTEN": "127.0.0.1:0",
            "RELAY_STATE_DIR": str(volume),
            "HOME": "/nonexistent",
        }
    )
    with log.open("wb") as stderr:
        return await asyncio.create_subprocess_exec(
            python_for(relay),
            "-c",
            RUN_RELAY,
            "serve",
            stdout=asyncio.subprocess.PIPE,
            stderr=stderr,
            env=env,
            cwd="/",
            user=relay.uid,
            group=relay.gid,
            extra_groups=relay.groups,
        )


async def listening_address(process: asyncio.subprocess.Process, log: Path) -> str:
    assert process.stdout is not None
    async with asyncio.timeout(30):
        while line := await process.stdout.readline():
            if found := re.search(rb"relay listening on (\S+:\d+)", line):
                return found.group(1).decode()
    await process.wait()
    pytest.fail(f"relay exited with {process.returncode} before serving:\n{read(log)}")


def test_the_chart_runs_relay_as_10001_with_fs_group_10001(tmp_path: Path) -> None:
    relay = rendered_relay()
    assert (relay.uid, relay.gid, relay.fs_group) == (10001, 10001, 10001)
    assert relay.state_dir == "/var/lib/relay"
    assert "emptyDir" in relay.volume
    assert not relay.read_only
    assert "fsGroup is unset" not in notes("relay", tmp=tmp_path / "default")
    unset = notes("relay", set_values={"podSecurityContext.fsGroup": None}, tmp=tmp_path / "off")
    assert "podSecurityContext.fsGroup is unset" in unset
    assert "writable by UID 10001" in unset


@pytest.mark.parametrize("kind", ["filesystem root", "emptyDir"])
async def test_relay_serves_and_keeps_its_store_on_a_root_owned_volume(
    scratch: Path, kind: str
) -> None:
    relay = rendered_relay()
    volume = root_owned_volume(scratch, kind)
    apply_fs_group(volume, relay.fs_group, read_only=relay.read_only)
    log = scratch / "relay.log"
    process = await start_relay(relay, volume, log)
    try:
        address = await listening_address(process, log)
        code, out, err = await run_module("bunnyrelay.healthcheck", address)
        assert (code, out) == (0, f"{address} SERVING\n"), err
        code, out, err = await run_bunny(
            "submit", "--target", address, "--kind", "echo", "--payload", "kept", "--json"
        )
        assert code == 0, out + err
        (result,) = [json.loads(line) for line in out.splitlines()]
        assert (result["status"], result["output"]) == ("SUCCEEDED", "kept")
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            assert await process.wait() == 0, read(log)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    store = volume / "jobs.sqlite3"
    assert (store.stat().st_uid, store.stat().st_gid) == (relay.uid, relay.fs_group)
    with sqlite3.connect(f"file:{store}?mode=ro", uri=True) as db:
        assert db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] > 0
    assert "Traceback" not in read(log)


async def test_without_fs_group_relay_stops_with_a_clear_message(scratch: Path) -> None:
    """The contrary case: the same volume, the same user, no fsGroup (no ownership change,
    no extra group). relay cannot create its store and must say so, not crash."""
    relay = rendered_relay({"podSecurityContext.fsGroup": None})
    assert relay.fs_group is None
    volume = root_owned_volume(scratch, "filesystem root")
    apply_fs_group(volume, relay.fs_group, read_only=relay.read_only)
    log = scratch / "relay.log"
    process = await start_relay(relay, volume, log)
    try:
        async with asyncio.timeout(30):
            code = await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    message = read(log)
    assert code == 1, message
    assert "Traceback" not in message
    assert str(volume / "jobs.sqlite3") in message
    assert "--state-dir" in message
    assert not (volume / "jobs.sqlite3").exists()
