"""`make stack`: the cross-cloud DNS chain in the foreground, to explore by hand.

Starts the topology of :mod:`lab.topology` (network namespaces as root,
loopback addresses otherwise) and, unless ``--no-relay``, one relay on the AWS
side at each of relay's A records; prints where everything is and commands to try;
runs until Ctrl-C (or SIGTERM), then ends every process and deletes the namespaces.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import shutil
import signal
import sys
from collections.abc import Sequence

from lab.tools import ToolMissingError, tool, tools_dir
from lab.topology import (
    RELAY_NAME,
    SRV_NAME,
    Hop,
    Mode,
    Side,
    Topology,
    TopologyError,
    choose_mode,
    start_topology,
)


def _command(topology: Topology, side: Side, argv: Sequence[str]) -> str:
    return shlex.join(topology.argv(side, argv))


def _guide(topology: Topology, relays: Sequence[str]) -> str:
    cluster_dns = topology.cluster_dns
    bunny = [sys.executable, "-m", "bunny"]
    # resolv.conf cannot carry a port: off port 53 (loopback mode) name it as well.
    resolver = ["--resolv-conf", str(topology.resolv_conf)]
    if cluster_dns.port != 53:
        resolver += ["--nameserver", str(cluster_dns)]
    pod = [
        [*bunny, "resolve", RELAY_NAME, *resolver],
    ]
    if shutil.which("dig"):
        dig = ["dig", f"@{cluster_dns.host}", "-p", str(cluster_dns.port)]
        pod += [[*dig, RELAY_NAME], [*dig, SRV_NAME, "SRV"]]
    if relays:
        target = f"{RELAY_NAME}:{topology.zone.relay_ports[0]}"
        pod.append([*bunny, "submit", "--target", target, "--count", "3", *resolver])
    cli = [
        str(tools_dir() / "toxiproxy-cli"),
        "--host",
        f"http://{topology.tunnel_api.host}:{topology.tunnel_api.port}",
    ]
    aws = topology.namespace(Side.AWS)
    if topology.mode is Mode.NETNS and aws is not None:
        cut = (
            f"ip -n {aws.name} link set vpn1 down    # to mend it: ip -n {aws.name} link set"
            f" vpn1 up; ip -n {aws.name} route replace 10.253.1.0/24 via 10.253.0.9"
        )
    else:
        blackhole = ["toxic", "add", "--type", "timeout", "-a", "timeout=0", "-n", "cut"]
        cut = _command(topology, Side.AZURE, [*cli, *blackhole, "tunnel"])
    slow = ["toxic", "add", "--type", "latency", "-a", "latency=500", "tunnel"]

    lines = ["", topology.describe(), ""]
    for index, listen in enumerate(relays):
        log = topology.workdir / f"relay-{index + 1}.log"
        lines.append(f"relay listens on {listen} (log: {log})")
    if relays:
        lines.append("")
    lines.append("From the pod, where bunny runs (nameserver: the cluster DNS):")
    lines += ["  " + _command(topology, Side.POD, argv) for argv in pod]
    lines += ["", "Each hop, to ask directly from the pod:"]
    lines += [f"  --hop {label}={address}" for label, address in topology.hop_specs()]
    lines += ["", "Break the tunnel, or slow it down:", f"  {cut}"]
    lines.append("  " + _command(topology, Side.AZURE, [*cli, *slow]))
    zone_file = topology.workdir / Hop.ZONE.value / "private.aws.internal.db"
    lines += [
        "",
        f"Zone file: {zone_file}",
        "  (raise its serial and the zone server reloads it within a second)",
        f"Logs: {topology.workdir}/<hop>.log",
        "",
        "Ctrl-C ends everything.",
    ]
    return "\n".join(lines)


async def _run(mode: str, with_relay: bool) -> int:
    chosen, why = choose_mode(mode)
    print(f"Starting the CoreDNS chain in {chosen.value} mode ({why}) …", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with start_topology(chosen) as topology:
        relays: list[str] = []
        if with_relay:
            port = topology.zone.relay_ports[0]
            handles = []
            for index, address in enumerate(topology.relay_addresses):
                listen = f"{address}:{port}"
                argv = [sys.executable, "-m", "relay", "serve", "--listen", listen]
                # Side by side, each relay keeps its own store.
                state = topology.workdir / f"relay-{index + 1}-state"
                env = {**os.environ, "RELAY_STATE_DIR": str(state)}
                handles.append(
                    (listen, await topology.spawn(Side.AWS, f"relay-{index + 1}", argv, env=env))
                )
            await asyncio.sleep(1.0)
            for listen, handle in handles:
                if handle.process.returncode is None:
                    relays.append(listen)
                else:
                    tail = "\n".join(handle.log_path.read_text().splitlines()[-10:])
                    print(f"{handle.label} did not start:\n{tail}", file=sys.stderr)
        print(_guide(topology, relays), flush=True)
        await stop.wait()
        print("\nStopping …", flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lab.stack",
        description="Run the cross-cloud CoreDNS chain in the foreground until Ctrl-C.",
    )
    parser.add_argument(
        "--mode",
        choices=["auto", *(mode.value for mode in Mode)],
        default="auto",
        help="netns needs root; auto picks netns when it can (default: auto)",
    )
    parser.add_argument(
        "--relay",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also start a relay on the AWS side at each A record (default: yes)",
    )
    args = parser.parse_args(argv)
    try:
        tool("coredns")
        tool("toxiproxy-server")
        return asyncio.run(_run(args.mode, args.relay))
    except (ToolMissingError, TopologyError) as error:
        print(f"make stack: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
