"""A small client for Toxiproxy's HTTP API, and the proxy that plays the VPN tunnel.

Toxiproxy (https://github.com/Shopify/toxiproxy) is a TCP proxy whose faults
("toxics") are switched on and off over HTTP while connections stay open. The lab
puts one proxy, ``tunnel``, on the forwarder's path to the AWS resolver, so the
tunnel can be made slow, lossy or silent without touching the DNS servers.

The calls are blocking (urllib); the topology makes them on a thread inside the
namespace where the API listens (:func:`lab.netns.run_in`).

:func:`toxiproxy_server` runs a server of its own on loopback (the fault tests put
one between bunny and relay) and kills it by its PID when the block ends.
"""

from __future__ import annotations

import asyncio
import json
import socket
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from lab.tools import TOXIPROXY, tool


class ToxiproxyError(RuntimeError):
    """The API refused a request; the message has its status and body."""


@dataclass(frozen=True, slots=True)
class ToxiproxyApi:
    """Toxiproxy's API at ``http://HOST:PORT``."""

    host: str
    port: int
    timeout: float = 5.0

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"http://{self.host}:{self.port}{path}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json"} if data is not None else {},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                text = response.read().decode()
        except urllib.error.HTTPError as error:
            detail = error.read().decode(errors="replace").strip()
            raise ToxiproxyError(f"{method} {path}: HTTP {error.code} {detail}") from None
        return json.loads(text) if text.strip() else None

    def version(self) -> str:
        """The server's version text; raises OSError while it is not listening yet."""
        request = urllib.request.Request(f"http://{self.host}:{self.port}/version")
        with urllib.request.urlopen(request, timeout=self.timeout) as response:
            return str(response.read().decode().strip())

    def create_proxy(self, name: str, listen: str, upstream: str) -> None:
        """A proxy ``name`` from ``listen`` (HOST:PORT) to ``upstream`` (HOST:PORT), enabled."""
        self._call(
            "POST",
            "/proxies",
            {"name": name, "listen": listen, "upstream": upstream, "enabled": True},
        )

    def set_enabled(self, proxy: str, enabled: bool) -> None:
        """Disable ``proxy`` (it stops listening and closes every connection) or enable it."""
        self._call("POST", f"/proxies/{proxy}", {"enabled": enabled})

    def add_toxic(
        self,
        proxy: str,
        name: str,
        kind: str,
        attributes: dict[str, int | float],
        *,
        stream: str = "downstream",
        toxicity: float = 1.0,
    ) -> None:
        """Add the toxic ``name`` of type ``kind`` (latency, timeout, …) to ``proxy``.

        ``toxicity`` is the chance that a *connection* gets the toxic, decided when it opens.
        """
        self._call(
            "POST",
            f"/proxies/{proxy}/toxics",
            {
                "name": name,
                "type": kind,
                "stream": stream,
                "toxicity": toxicity,
                "attributes": attributes,
            },
        )

    def toxics(self, proxy: str) -> list[str]:
        """The names of the toxics on ``proxy``."""
        return [str(toxic["name"]) for toxic in self._call("GET", f"/proxies/{proxy}/toxics")]

    def remove_toxic(self, proxy: str, name: str) -> None:
        """Remove the toxic ``name`` from ``proxy``."""
        self._call("DELETE", f"/proxies/{proxy}/toxics/{name}")

    def remove_toxics(self, proxy: str) -> None:
        """Remove every toxic from ``proxy``."""
        for name in self.toxics(proxy):
            self.remove_toxic(proxy, name)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on at ``host`` right now."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


@asynccontextmanager
async def toxiproxy_server(
    host: str = "127.0.0.1", *, ready_timeout: float = 10.0
) -> AsyncIterator[ToxiproxyApi]:
    """``toxiproxy-server`` with its API on ``host`` and a free port, until the block ends.

    Its log (a line per connection) is discarded; the API answers what it does.
    """
    for _ in range(5):
        api = ToxiproxyApi(host, free_port(host))
        process = await asyncio.create_subprocess_exec(
            str(tool(TOXIPROXY)),
            "-host",
            host,
            "-port",
            str(api.port),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        try:
            ready = False
            async with asyncio.timeout(ready_timeout):
                while process.returncode is None and not ready:
                    try:
                        await asyncio.to_thread(api.version)
                        ready = True
                    except OSError:
                        await asyncio.sleep(0.05)
            if not ready:
                continue  # it exited: most likely another process took the port meanwhile
            yield api
            return
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
    raise RuntimeError(f"toxiproxy-server did not start on any of 5 free ports on {host}")
