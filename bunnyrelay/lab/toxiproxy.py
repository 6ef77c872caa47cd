"""A small client for Toxiproxy's HTTP API, and the proxy that plays the VPN tunnel.

Toxiproxy (https://github.com/Shopify/toxiproxy) is a TCP proxy whose faults
("toxics") are switched on and off over HTTP while connections stay open. The lab
puts one proxy, ``tunnel``, on the forwarder's path to the AWS resolver, so the
tunnel can be made slow, lossy or silent without touching the DNS servers.

The calls are blocking (urllib); the topology makes them on a thread inside the
namespace where the API listens (:func:`bunnyrelay.lab.netns.run_in`).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any


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
