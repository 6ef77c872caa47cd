"""Linux network namespaces for the lab: create them, wire them, run code inside them.

Everything goes through iproute2 (``ip netns``, ``ip link``, ``ip addr``, ``ip route``)
and needs root. Interfaces are created inside the namespaces, never in the host's,
so their names cannot collide with the host's and they vanish with the namespace.

Code runs inside a namespace in one of two ways:

- a process: :meth:`Namespace.argv` prefixes ``ip netns exec NAME``, which also
  bind-mounts ``/etc/netns/NAME/resolv.conf`` over ``/etc/resolv.conf``;
- Python in this process: :func:`run_in` runs a function on a new thread that first
  moves itself (only itself: ``setns`` is per thread) into the namespace. Sockets
  and threads made there belong to that namespace; the thread ends afterwards, so
  no thread of the host's pool is ever left inside.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import shutil
import threading
from collections.abc import Callable, Coroutine, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

_T = TypeVar("_T")

NETNS_DIR = Path("/run/netns")
ETC_NETNS_DIR = Path("/etc/netns")
_CLONE_NEWNET = 0x40000000


class NetnsError(RuntimeError):
    """An ``ip`` command failed; the message has the command and what it printed."""


@dataclass(frozen=True, slots=True)
class Namespace:
    """A named network namespace (``/run/netns/NAME``)."""

    name: str

    def argv(self, argv: Sequence[str]) -> list[str]:
        """``argv`` run inside this namespace (``ip netns exec NAME …``)."""
        return ["ip", "netns", "exec", self.name, *argv]

    @property
    def etc_dir(self) -> Path:
        """``/etc/netns/NAME``: files here replace ``/etc``'s for ``ip netns exec``."""
        return ETC_NETNS_DIR / self.name


def unavailable_reason() -> str | None:
    """Why namespaces cannot be used here, or None when they can."""
    if os.geteuid() != 0:
        return "not root"
    if shutil.which("ip") is None:
        return "iproute2's ip command is missing"
    return None


async def ip(*args: str) -> str:
    """Run ``ip ARGS``; return its output, raise :class:`NetnsError` when it fails."""
    process = await asyncio.create_subprocess_exec(
        "ip",
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    if process.returncode != 0:
        raise NetnsError(f"ip {' '.join(args)}: {err.decode().strip() or process.returncode}")
    return out.decode()


async def create(name: str) -> Namespace:
    """Add the namespace ``name`` and bring its loopback up."""
    await ip("netns", "add", name)
    namespace = Namespace(name)
    await ip("-n", name, "link", "set", "lo", "up")
    return namespace


async def delete(name: str) -> None:
    """Delete the namespace ``name`` (its interfaces go with it) and its ``/etc/netns`` files."""
    if (NETNS_DIR / name).exists():
        await ip("netns", "delete", name)
    remove_etc_files(name)


def remove_etc_files(name: str) -> None:
    """Remove ``/etc/netns/NAME`` (and ``/etc/netns`` itself once no namespace has files there)."""
    shutil.rmtree(ETC_NETNS_DIR / name, ignore_errors=True)
    with contextlib.suppress(OSError):
        ETC_NETNS_DIR.rmdir()


async def names() -> list[str]:
    """The names of the namespaces that exist now."""
    listing = await ip("netns", "list")
    return [line.split()[0] for line in listing.splitlines() if line.strip()]


async def pids(name: str) -> list[int]:
    """The processes running inside the namespace ``name``."""
    return [int(pid) for pid in (await ip("netns", "pids", name)).split()]


async def link(
    left: Namespace, left_if: str, left_cidr: str, right: Namespace, right_if: str, right_cidr: str
) -> None:
    """A veth pair from ``left`` to ``right``, addressed and up on both ends."""
    await ip(
        "-n", left.name, "link", "add", left_if, "type", "veth",
        "peer", "name", right_if, "netns", right.name,
    )  # fmt: skip
    for namespace, interface, cidr in ((left, left_if, left_cidr), (right, right_if, right_cidr)):
        await ip("-n", namespace.name, "addr", "add", cidr, "dev", interface)
        await ip("-n", namespace.name, "link", "set", interface, "up")


async def add_local_address(namespace: Namespace, address: str) -> None:
    """Give ``namespace`` a service address (a /32 on its loopback), like a VIP."""
    await ip("-n", namespace.name, "addr", "add", f"{address}/32", "dev", "lo")


async def route(namespace: Namespace, destination: str, via: str) -> None:
    """Send ``destination`` (a CIDR) through the neighbour ``via``; replaces an old route."""
    await ip("-n", namespace.name, "route", "replace", destination, "via", via)


async def set_link(namespace: Namespace, interface: str, *, up: bool) -> None:
    """Set ``interface`` in ``namespace`` administratively up or down."""
    await ip("-n", namespace.name, "link", "set", interface, "up" if up else "down")


_libc = ctypes.CDLL(None, use_errno=True)


def _enter(name: str) -> None:
    """Move the calling thread (only it) into the namespace ``name``."""
    fd = os.open(NETNS_DIR / name, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if _libc.setns(fd, _CLONE_NEWNET) != 0:
            code = ctypes.get_errno()
            raise OSError(code, f"setns({name}): {os.strerror(code)}")
    finally:
        os.close(fd)


async def run_in(namespace: Namespace | None, function: Callable[[], _T]) -> _T:
    """``function()`` on a thread of its own, its sockets in ``namespace`` (None: the host's)."""
    if namespace is None:
        return await asyncio.to_thread(function)
    future: Future[_T] = Future()

    def body() -> None:
        try:
            _enter(namespace.name)
            future.set_result(function())
        except BaseException as error:  # handed to the awaiting side, which re-raises it
            future.set_exception(error)

    thread = threading.Thread(target=body, name=f"netns-{namespace.name}", daemon=True)
    thread.start()
    return await asyncio.wrap_future(future)


async def run_coroutine_in(
    namespace: Namespace | None, factory: Callable[[], Coroutine[Any, Any, _T]]
) -> _T:
    """Await ``factory()`` with its sockets in ``namespace``.

    Inside a namespace the coroutine runs on its own thread and event loop, so it
    must not share asyncio objects with the caller's loop; make them in ``factory``.
    """
    if namespace is None:
        return await factory()
    return await run_in(namespace, lambda: asyncio.run(factory()))
