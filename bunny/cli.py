"""The ``bunny`` command: ``submit`` jobs to relay, ``resolve`` relay's name and show every
query, ``diagnose`` the DNS path hop by hop, ``bench`` a relay.

Every flag has a ``BUNNY_…`` environment variable; a flag on the command line
wins. The flags are the fields of :class:`bunny.config.BunnyConfig`, with their
``--help`` taken from there; :data:`COMMANDS` says which command has which.
Exit status: 0 when every job succeeded (or the name resolved), 1 when any job
failed (or the lookup failed), 2 for bad flags, settings or files.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields

from bunny.config import BunnyConfig
from bunnyrelay.settings import (
    EnvArgumentParser,
    SettingError,
    add_options,
    from_namespace,
)

ENV_PREFIX = "BUNNY_"
_DNS = ("nameserver", "resolv_conf", "ndots", "family", "hosts_file")
_TLS = ("tls", "tls_ca", "tls_cert", "tls_key")
_OUTPUT = ("json", "log_format", "log_level")
_KEEP = ("keep_slower_than", "keep_max_waiting", "keep_max_age")


@dataclass(frozen=True)
class Command:
    """One ``bunny`` command: what it is, and which of the config's fields are its flags."""

    help: str
    description: str
    flags: tuple[str, ...]
    positional: str | None = None
    """A field given as the command's argument instead of a flag."""
    defaults: Mapping[str, object] = field(default_factory=dict)
    """Defaults of this command that differ from the field's own."""
    docs: Mapping[str, str] = field(default_factory=dict)
    """Help of this command's flags where the field's own would name flags it lacks."""


COMMANDS: dict[str, Command] = {
    "submit": Command(
        "send jobs to relay and print their results",
        "Send jobs to relay, found by DNS, and print one line per job. A job is retried "
        "within its deadline while its failure can pass.",
        (
            "target",
            *_DNS,
            "kind",
            "payload",
            "payload_file",
            "max_payload_bytes",
            "count",
            "concurrency",
            "job_id",
            "stream",
            "timeout",
            "attempts",
            "keepalive",
            *_TLS,
            *_KEEP,
            *_OUTPUT,
        ),
    ),
    "resolve": Command(
        "resolve a name and show every query sent",
        "Resolve a name the way bunny does before every job, and show every query sent.",
        (*_DNS, *_OUTPUT),
        positional="name",
    ),
    "diagnose": Command(
        "ask every DNS hop and relay itself, and say which hop broke",
        "Ask every DNS hop for relay's name, show what the search list costs, dial every "
        "address found, and say which hop broke.",
        (
            "hop",
            "resolv_conf",
            "family",
            "hosts_file",
            "query_timeout",
            "alive_query",
            *_TLS,
            *_OUTPUT,
        ),
        positional="target",
        defaults={"family": "ipv4"},
        docs={
            "resolv_conf": "resolve relay's name through this file as a pod does, to show "
            "what its search list and ndots cost (unset: /etc/resolv.conf without --hop, "
            "none with --hop)",
        },
    ),
    "bench": Command(
        "load relay with jobs through bunny's own submitters and report jobs/s and latency",
        "Keep jobs in flight against relay for a while, the way bunny submit sends them, and "
        "report jobs/s, latency, bunny's CPU per job and where DNS answers came from.",
        (
            "target",
            *_DNS,
            "duration",
            "warmup",
            "concurrency",
            "stream",
            "payload_bytes",
            *_TLS,
            *_KEEP,
            *_OUTPUT,
        ),
        defaults={"concurrency": 64},
    ),
}


def _positional(parser: EnvArgumentParser, name: str) -> None:
    (each,) = [f for f in fields(BunnyConfig) if f.name == name]
    parse = each.metadata["parse"]

    def convert(text: str) -> object:
        try:
            return parse(text)
        except SettingError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = name
    parser.add_argument(
        name, type=convert, metavar=each.metadata["metavar"], help=each.metadata["doc"]
    )


def build_parser() -> EnvArgumentParser:
    parser = EnvArgumentParser(
        prog="bunny",
        env_prefix=ENV_PREFIX,
        description="Send jobs to relay, found by DNS with every lookup retried and traced.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, command in COMMANDS.items():
        sub = commands.add_parser(
            name, env_prefix=ENV_PREFIX, help=command.help, description=command.description
        )
        if command.positional is not None:
            _positional(sub, command.positional)
        add_options(sub, BunnyConfig, command.flags, defaults=command.defaults, docs=command.docs)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = from_namespace(BunnyConfig, args, env_prefix=ENV_PREFIX)
    except SettingError as exc:
        parser.exit(2, f"bunny: error: {exc}\n")
    # Loaded only to run, so that --help and a bad flag stay quick, and after the OTEL_*
    # variables are checked: OpenTelemetry's API fails on some as it is imported.
    from bunnyrelay.logs import configure_logging
    from bunnyrelay.telemetry import setup_telemetry

    configure_logging("bunny", fmt=config.log_format, level=config.log_level)
    try:
        telemetry = setup_telemetry("bunny", keep=config.keep_settings())
    except SettingError as exc:
        parser.exit(2, f"bunny: error: {exc}\n")
    from bunny.commands import run

    try:
        code = run(args.command, config)
    except SettingError as exc:
        parser.exit(2, f"bunny: error: {exc}\n")
    except KeyboardInterrupt:
        code = 130
    finally:
        telemetry.shutdown()
    sys.exit(code)
