"""``relay serve``: run the job server until SIGTERM, then drain and exit 0.

Exit status: 0 after a drain, 1 when relay cannot start (the port is in use,
the idempotency store cannot be opened, the TLS files cannot be used), 2 for a
bad flag or environment variable (the message names it).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence

from bunnyrelay.logs import configure_logging
from bunnyrelay.settings import EnvArgumentParser, SettingError, add_options, from_namespace
from bunnyrelay.telemetry import setup_telemetry
from relay.config import RelayConfig
from relay.errors import StartupError
from relay.lifecycle import serve_until_signalled

PROG = "relay"


def build_parser() -> EnvArgumentParser:
    parser = EnvArgumentParser(
        prog=PROG,
        description="relay runs jobs for bunny over gRPC (bunnyrelay.v1.JobService).",
        env_prefix="RELAY_",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    serve = commands.add_parser(
        "serve",
        env_prefix="RELAY_",
        help="serve JobService, health and reflection until SIGTERM",
        description="Serve jobs until SIGTERM or SIGINT, then drain within the grace period.",
    )
    add_options(serve, RelayConfig)
    return parser


def config_from(args: argparse.Namespace) -> RelayConfig:
    """``relay serve``'s parsed flags as its config; a SettingError names the flag and variable."""
    return from_namespace(RelayConfig, args, env_prefix="RELAY_")


async def serve(config: RelayConfig, log: logging.Logger) -> None:
    # Imported once setup_telemetry has checked the OTEL_* variables: OpenTelemetry's API
    # fails on a bad OTEL_PROPAGATORS as it is imported, and the server imports it.
    from relay.server import JOB_SERVICE, Relay

    relay = Relay(config, logger=log)

    async def start() -> None:
        log.info(
            "relay starting: instance %s, kinds %s, store %s, %s",
            config.instance_name,
            ", ".join(relay.runner.known_kinds),
            config.store_path or config.store.scheme,
            ("mutual TLS" if config.tls_client_ca else "TLS") if config.tls else "plaintext",
            extra={"event": "relay.start"},
        )
        await relay.start()
        if relay.health_address is not None:
            log.info(
                "relay health (grpc.health.v1 only, plaintext) on %s",
                relay.health_address,
                extra={"event": "relay.health_listening", "address": str(relay.health_address)},
            )
        log.info(
            "relay ready on %s, serving %s",
            relay.address,
            JOB_SERVICE,
            extra={"event": "relay.ready", "address": str(relay.address)},
        )
        # Read by the tests and the demo, which may have asked for port 0.
        print(f"relay listening on {relay.address}", flush=True)
        if relay.health_address is not None:
            print(f"relay health listening on {relay.health_address}", flush=True)

    try:
        await serve_until_signalled(start, relay.drain, relay.hurry, log)
    finally:
        await relay.stop()
    log.info("relay stopped", extra={"event": "relay.stop"})


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command != "serve":
        parser.print_help(sys.stderr)
        return 2
    try:
        config = config_from(args)
    except SettingError as exc:
        parser.error(str(exc))
    log = configure_logging(PROG, fmt=config.log_format, level=config.log_level)
    try:
        telemetry = setup_telemetry(PROG, keep=config.keep_settings())
    except SettingError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(serve(config, log))
    except StartupError as exc:
        log.error("%s", exc, extra={"event": exc.event})
        return 1
    except KeyboardInterrupt:
        # Only before the signal handlers are in place; after that SIGINT drains.
        return 130
    finally:
        telemetry.shutdown()
    return 0
