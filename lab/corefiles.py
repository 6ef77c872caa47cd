"""The CoreDNS configuration of the cross-cloud DNS path, rendered from ``deploy/coredns/``.

Those files are the one source that the lab's topology, the compose stack and the
Helm charts render; each role below is one of them. Placeholders are CoreDNS's own
environment syntax, ``{$NAME}``, so a Corefile can also be used as it is with
``NAME`` in CoreDNS's environment. :func:`render` fills them in:

- every placeholder of the file must be given (as the lower-case keyword ``name=``),
  and nothing else may be, so a typo fails instead of leaving a hole;
- a value that is a list or tuple repeats the line it is on once per item, and an
  empty one drops that line (``relay_addresses=[]``: relay has no A record);
- :func:`bind_to` adds ``bind ADDRESS`` to every server block of a rendered Corefile.
  Only the lab needs it: several CoreDNS processes share one network namespace
  there, while Kubernetes and compose give each its own address, so the shipped
  text has no ``bind``.

As a command, for the compose stack and the charts::

    python -m lab.corefiles conditional-forward forwarder=10.224.0.4:53
    python -m lab.corefiles zone-file ttl=300 soa_ttl=900 serial=1 \\
        relay_addresses=10.0.1.10,10.0.2.10 relay_ports=50051
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Mapping, Sequence
from enum import StrEnum
from pathlib import Path

SOURCE_DIR = Path(__file__).resolve().parents[1] / "deploy" / "coredns"
"""Where the source text lives (``deploy/coredns/`` at the top of the repository)."""

ZONE = "private.aws.internal"
ZONE_FILE_NAME = "private.aws.internal.db"
"""The zone file's name, as ``Corefile.zone`` refers to it (relative to the working directory)."""
CONDITIONAL_FORWARD_KEY = "private-aws-internal.server"
"""The key in AKS's ``coredns-custom`` ConfigMap, and the file name the cluster DNS imports."""

_PLACEHOLDER = re.compile(r"\{\$([A-Z][A-Z0-9_]*)\}")
# A server block opens on an unindented line ending in "{" (e.g. "private.aws.internal {").
_BLOCK_START = re.compile(r"^[^\s#;][^#\n]*\{[ \t]*$", flags=re.MULTILINE)

Value = str | int | Sequence[str | int]


class Role(StrEnum):
    """One CoreDNS configuration file of the path, from the pod outward."""

    CLUSTER_DNS = "cluster-dns"
    """The lab's stand-in for the Corefile AKS manages; it imports the conditional forward."""
    CONDITIONAL_FORWARD = "conditional-forward"
    """The AKS ``coredns-custom`` ``*.server`` block: ``private.aws.internal`` to the forwarder."""
    FORWARDER = "forwarder"
    """The Azure-side forwarder (an Azure DNS Private Resolver or a forwarder VM): the zone
    across the tunnel. Not the VPN gateway, which carries the query and answers no DNS."""
    AWS_RESOLVER = "aws-resolver"
    """The AWS VPC resolver: the zone to the private hosted zone's server."""
    ZONE_SERVER = "zone-server"
    """The server of the Route 53 private hosted zone (serves the zone file)."""
    ZONE_FILE = "zone-file"
    """The private hosted zone itself: SOA and NS like Route 53's, relay's A and SRV records."""


SOURCES: Mapping[Role, str] = {
    Role.CLUSTER_DNS: "Corefile.cluster-dns",
    Role.CONDITIONAL_FORWARD: CONDITIONAL_FORWARD_KEY,
    Role.FORWARDER: "Corefile.forwarder",
    Role.AWS_RESOLVER: "Corefile.aws-resolver",
    Role.ZONE_SERVER: "Corefile.zone",
    Role.ZONE_FILE: ZONE_FILE_NAME,
}
"""Each role's file in :data:`SOURCE_DIR`."""


class RenderError(ValueError):
    """A placeholder was left without a value, or a value was given for none."""


def source_text(role: Role | str) -> str:
    """The file of ``role`` exactly as committed, placeholders and all."""
    return (SOURCE_DIR / SOURCES[Role(role)]).read_text(encoding="utf-8")


def placeholders(role: Role | str) -> frozenset[str]:
    """The lower-case keyword names :func:`render` needs for ``role``."""
    return frozenset(name.lower() for name in _PLACEHOLDER.findall(source_text(role)))


def render(role: Role | str, /, **values: Value) -> str:
    """The text of ``role`` with every ``{$NAME}`` replaced by ``values[name]``."""
    role = Role(role)
    wanted = placeholders(role)
    missing = sorted(wanted - values.keys())
    unknown = sorted(values.keys() - wanted)
    if missing or unknown:
        parts = []
        if missing:
            parts.append("missing " + ", ".join(missing))
        if unknown:
            parts.append("unknown " + ", ".join(unknown))
        raise RenderError(
            f"{role} ({SOURCES[role]}): {'; '.join(parts)}; it takes {', '.join(sorted(wanted))}"
        )
    lines: list[str] = []
    for line in source_text(role).splitlines():
        lines.extend(_render_line(line, values))
    return "\n".join(lines) + "\n"


def bind_to(corefile: str, address: str) -> str:
    """``corefile`` with ``bind ADDRESS`` first in every server block (the lab's addition)."""
    if not _BLOCK_START.search(corefile):
        raise RenderError("no server block to bind (a zone file?)")
    lines: list[str] = []
    for line in corefile.splitlines():
        lines.append(line)
        if _BLOCK_START.match(line):
            lines.append(f"    bind {address}")
    return "\n".join(lines) + "\n"


def without_directive(corefile: str, directive: str) -> str:
    """``corefile`` without any ``directive`` line, nor the ``{ … }`` block it opens."""
    lines: list[str] = []
    depth = 0
    for line in corefile.splitlines():
        if depth:
            depth += line.count("{") - line.count("}")
            continue
        words = line.split()
        if words and words[0] == directive:
            depth = line.count("{") - line.count("}")
            continue
        lines.append(line)
    return "\n".join(lines) + "\n"


def _render_line(line: str, values: Mapping[str, Value]) -> list[str]:
    names = [name.lower() for name in _PLACEHOLDER.findall(line)]
    listed = [name for name in names if isinstance(values[name], list | tuple)]
    if len(listed) > 1:
        raise RenderError(f"only one list value per line, got {', '.join(listed)}: {line!r}")
    items: Sequence[str | int | None] = [None]
    if listed:
        value = values[listed[0]]
        assert isinstance(value, list | tuple)
        items = value

    def fill(item: str | int | None) -> str:
        def one(match: re.Match[str]) -> str:
            name = match.group(1).lower()
            value = item if name in listed else values[name]
            text = str(value)
            if not text or any(c.isspace() for c in text):
                raise RenderError(f"{name}={value!r}: values are single non-empty words")
            return text

        return _PLACEHOLDER.sub(one, line)

    return [fill(item) for item in items]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lab.corefiles",
        description="Print one CoreDNS file of the cross-cloud path with its placeholders filled.",
    )
    parser.add_argument("role", choices=[role.value for role in Role])
    parser.add_argument(
        "values",
        nargs="*",
        metavar="NAME=VALUE",
        help="a placeholder's value; VALUE with commas is a list (one line per item)",
    )
    parser.add_argument("--bind", help="add 'bind ADDRESS' to every server block (the lab)")
    args = parser.parse_args(argv)
    values: dict[str, Value] = {}
    for pair in args.values:
        name, sep, value = pair.partition("=")
        if not sep:
            parser.error(f"{pair!r}: expected NAME=VALUE")
        values[name.lower()] = value.split(",") if "," in value else value
    try:
        text = render(args.role, **values)
        sys.stdout.write(bind_to(text, args.bind) if args.bind else text)
    except RenderError as error:
        parser.error(str(error))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
