"""The files the Helm charts and the compose stack ship, made from ``deploy/``.

A Helm chart can only read files inside itself, and a zone file has no environment
syntax for compose to fill in, so these are generated, committed, and checked by
``tests/deploy`` (a stale one fails, the way stale protobuf code does):

- ``charts/bunny/files/coredns/private-aws-internal.server``: the conditional forward,
  verbatim. The chart replaces ``{$FORWARDER}`` and ships it as the AKS
  ``kube-system/coredns-custom`` ConfigMap.
- ``charts/relay/files/coredns/Corefile.aws-resolver``: the zone's server block on the
  AWS side, verbatim. The chart replaces ``{$ZONE_SERVER}`` and appends it to the EKS
  CoreDNS add-on's Corefile.
- ``charts/*/files/monitoring/``: the alerts (``deploy/monitoring/*.rules.yaml``) and the
  Grafana dashboards (``deploy/monitoring/dashboards/``, written by :mod:`lab.dashboards`),
  verbatim: bunny's alerts and both dashboards in bunny's chart, relay's alerts and the
  "Jobs" dashboard in relay's.
- ``deploy/compose/private.aws.internal.db``: the private zone, rendered with the
  addresses ``compose.yaml`` gives relay's path (the Corefiles themselves are mounted
  into the compose stack as they are, their ``{$NAME}`` placeholders filled from
  each service's environment by CoreDNS).

``python -m lab.deployfiles`` (``make deploy-files``) writes them;
``--check`` only reports the stale ones and exits 1 if there are any.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from lab import corefiles
from lab.corefiles import Role

ROOT = corefiles.SOURCE_DIR.parents[1]
"""The top of the repository."""
COMPOSE_FILE = ROOT / "compose.yaml"

MONITORING = ROOT / "deploy" / "monitoring"
CHART_MONITORING = {
    "bunny": ("bunny.rules.yaml", "dashboards/dns-path.json", "dashboards/jobs.json"),
    "relay": ("relay.rules.yaml", "dashboards/jobs.json"),
}
"""Per chart, what it ships of ``deploy/monitoring/``."""

COMPOSE_ZONE = {"ttl": 30, "soa_ttl": 900, "serial": 1}
"""The compose zone's TTLs: short, so that editing relay's record shows within seconds."""


def chart_file(chart: str, role: Role) -> Path:
    """Where ``chart`` keeps its verbatim copy of ``role``'s source file."""
    return ROOT / "charts" / chart / "files" / "coredns" / corefiles.SOURCES[role]


def compose_relay_path(compose: Mapping[str, Any]) -> tuple[str, int]:
    """The address and port bunny reaches relay at in the compose stack.

    The stack has no router between its two networks: the ``tunnel`` service (Toxiproxy)
    relays relay's gRPC port the way the VPN makes an AWS address reachable from Azure,
    so relay's A record is the tunnel's address on the Azure network.
    """
    tunnel = compose["services"]["tunnel"]
    address = str(tunnel["networks"]["azure"]["ipv4_address"])
    port = int(compose["services"]["relay"]["environment"]["RELAY_LISTEN"].rpartition(":")[2])
    return address, port


def expected(compose_file: Path = COMPOSE_FILE) -> dict[Path, str]:
    """Every generated file and the text it should have."""
    compose = yaml.safe_load(compose_file.read_text(encoding="utf-8"))
    relay_address, relay_port = compose_relay_path(compose)
    monitoring = {
        ROOT / "charts" / chart / "files" / "monitoring" / name: (MONITORING / name).read_text(
            encoding="utf-8"
        )
        for chart, names in CHART_MONITORING.items()
        for name in names
    }
    return monitoring | {
        chart_file("bunny", Role.CONDITIONAL_FORWARD): corefiles.source_text(
            Role.CONDITIONAL_FORWARD
        ),
        chart_file("relay", Role.AWS_RESOLVER): corefiles.source_text(Role.AWS_RESOLVER),
        ROOT / "deploy" / "compose" / corefiles.ZONE_FILE_NAME: corefiles.render(
            Role.ZONE_FILE,
            relay_addresses=[relay_address],
            relay_ports=[relay_port],
            **COMPOSE_ZONE,
        ),
    }


def stale(files: Mapping[Path, str]) -> list[Path]:
    """The files whose text on disk differs from ``files`` (or that are missing)."""
    return [
        path
        for path, text in files.items()
        if not path.is_file() or path.read_text(encoding="utf-8") != text
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lab.deployfiles",
        description="Write the charts' and compose's files from deploy/.",
    )
    parser.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 if any file is stale"
    )
    args = parser.parse_args(argv)
    files = expected()
    outdated = stale(files)
    for path in outdated:
        shown = path.relative_to(ROOT)
        if args.check:
            print(f"stale: {shown}", file=sys.stderr)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(files[path], encoding="utf-8")
        print(f"wrote {shown}")
    if args.check and outdated:
        print("run `make deploy-files` to bring them up to date", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
