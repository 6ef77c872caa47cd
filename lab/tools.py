"""The lab's external programs: the pinned CoreDNS, Toxiproxy, ghz and grpcurl of `make tools`.

They live in ``.tools/bin`` at the top of the repository (``BUNNYRELAY_TOOLS_DIR``
points elsewhere). A missing one is an error that says how to get it, never a
reason to fall back to something else.
"""

from __future__ import annotations

import os
from pathlib import Path

TOOLS_DIR = Path(__file__).resolve().parents[1] / ".tools" / "bin"
"""Where ``make tools`` installs: ``.tools/bin`` in the repository."""

COREDNS = "coredns"
TOXIPROXY = "toxiproxy-server"
GHZ = "ghz"
GRPCURL = "grpcurl"


class ToolMissingError(FileNotFoundError):
    """A program the lab needs is not installed; the message says how to install it."""


def tools_dir() -> Path:
    """``BUNNYRELAY_TOOLS_DIR`` if set, else :data:`TOOLS_DIR`."""
    override = os.environ.get("BUNNYRELAY_TOOLS_DIR")
    return Path(override) if override else TOOLS_DIR


def tool(name: str) -> Path:
    """The path of the installed program ``name``; raises :class:`ToolMissingError`."""
    path = tools_dir() / name
    if not os.access(path, os.X_OK):
        raise ToolMissingError(
            f"{path} is missing: run `make tools` to install the pinned CoreDNS, Toxiproxy, ghz "
            "and grpcurl (it needs Go and the Go module proxy; see tools/install.sh)"
        )
    return path
