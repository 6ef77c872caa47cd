"""Command-line flags that fall back to environment variables, with clear errors.

Every flag of ``relay`` and ``bunny`` has an environment variable with the
process's prefix (``RELAY_…``, ``BUNNY_…``); a flag given on the command line
wins. Values from either source go through the same parser, so a bad
``RELAY_LISTEN`` is rejected with the same message as a bad ``--listen``.

A process's settings are one frozen dataclass whose fields are declared with
:func:`setting`: each field's ``doc`` is written once and is its flag's
``--help``; :func:`add_options` declares a flag per field and
:func:`from_namespace` builds the object from the parsed flags, naming the flag
and variable of a value its checks refuse (they raise ``SettingError("field: why")``).
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import MISSING, dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")


class SettingError(ValueError):
    """A flag, environment variable or config file value that cannot be used."""


@dataclass(frozen=True, slots=True)
class HostPort:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_host_port(text: str, *, default_port: int | None = None) -> HostPort:
    """Parse ``HOST:PORT``, ``[V6]:PORT`` or (with a default port) a bare host."""
    text = text.strip()
    if not text:
        raise SettingError("expected HOST:PORT, got an empty value")
    host, port_text = text, ""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise SettingError(f"{text!r}: missing ']' after an IPv6 address")
        host, rest = text[1:end], text[end + 1 :]
        if rest and not rest.startswith(":"):
            raise SettingError(f"{text!r}: expected ':PORT' after ']'")
        port_text = rest[1:]
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    elif text.count(":") > 1:
        # A bare IPv6 address: only valid without a port.
        host = text
    if not host:
        raise SettingError(f"{text!r}: the host is empty")
    if not port_text:
        if default_port is None:
            raise SettingError(f"{text!r}: expected HOST:PORT (the port is missing)")
        return HostPort(host, default_port)
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise SettingError(f"{text!r}: the port must be a number from 1 to 65535")
    return HostPort(host, int(port_text))


def parse_ip_port(text: str, *, default_port: int) -> HostPort:
    """Like :func:`parse_host_port`, but the host must be an IP address (nameservers)."""
    hp = parse_host_port(text, default_port=default_port)
    try:
        ipaddress.ip_address(hp.host)
    except ValueError:
        raise SettingError(f"{text!r}: {hp.host!r} is not an IP address") from None
    return hp


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise SettingError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise SettingError(f"{text!r} must be at least 1")
    return value


def non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise SettingError(f"{text!r} is not a number") from None
    if not value >= 0 or value == float("inf"):
        raise SettingError(f"{text!r} must be a finite number of at least 0")
    return value


def choice(*allowed: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in allowed:
            raise SettingError(f"{text!r} is not one of: {', '.join(allowed)}")
        return text

    return parse


def _argparse_type(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """Make SettingError show up as argparse's own 'invalid value' message."""

    def convert(text: str) -> Any:
        try:
            return parse(text)
        except SettingError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = getattr(parse, "__name__", "value")
    return convert


class _DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows a flag's default, unless there is none to show or its help already says it
    in words (``default: no such port``): ``(default: None)`` after that says it twice."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if action.default is None or action.default == [] or "default:" in text:
            return text
        return super()._get_help_string(action)


class EnvArgumentParser(argparse.ArgumentParser):
    """An ArgumentParser whose options default to ``PREFIX_NAME`` environment variables."""

    def __init__(self, *args: Any, env_prefix: str, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _DefaultsHelpFormatter)
        super().__init__(*args, **kwargs)
        self.env_prefix = env_prefix

    def option(
        self,
        flag: str,
        *,
        parse: Callable[[str], Any] = str,
        default: Any = None,
        help: str,
        repeat: bool = False,
        switch: bool = False,
        metavar: str | None = None,
    ) -> argparse.Action:
        """Add ``--flag``, read from ``PREFIX_FLAG`` when not given.

        ``repeat`` options take a comma-separated list from the environment;
        ``switch`` options read ``1/true/yes`` and ``0/false/no``.
        """
        env = self.env_prefix + flag.lstrip("-").upper().replace("-", "_")
        raw = os.environ.get(env)
        value: Any = default
        if raw is not None and raw != "":
            try:
                if switch:
                    value = _parse_switch(raw)
                elif repeat:
                    value = [parse(item) for item in raw.split(",") if item.strip()]
                else:
                    value = parse(raw)
            except SettingError as exc:
                self.error(f"environment variable {env}: {exc}")
        help_text = f"{help} [env {env}]"
        if switch:
            return self.add_argument(
                flag, action=argparse.BooleanOptionalAction, default=value, help=help_text
            )
        return self.add_argument(
            flag,
            type=_argparse_type(parse),
            default=value,
            action=_ReplaceDefaultAppend if repeat else "store",
            help=help_text,
            metavar=metavar,
        )


class _ReplaceDefaultAppend(argparse.Action):
    """``append``, except that values from the command line replace those from the environment."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        seen: set[str] = getattr(namespace, "_given_on_command_line", set())
        if self.dest not in seen:
            setattr(namespace, self.dest, [])
            seen.add(self.dest)
            namespace._given_on_command_line = seen
        getattr(namespace, self.dest).append(values)


def _parse_switch(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise SettingError(f"{text!r} is not a yes/no value (use true or false)")


# --- config objects whose fields are their flags -------------------------------------------


def setting(
    default: Any = MISSING,
    *,
    default_factory: Callable[[], Any] | None = None,
    doc: str,
    parse: Callable[[str], Any] = str,
    metavar: str | None = None,
    switch: bool = False,
    repeat: bool = False,
) -> Any:
    """A field of a config dataclass: its documentation, which is also its flag's ``--help``,
    and how its flag is read (``parse``, ``metavar``; ``switch`` for an on/off flag,
    ``repeat`` for a flag given once per value, a tuple in the object)."""
    metadata = {"doc": doc, "parse": parse, "metavar": metavar, "switch": switch, "repeat": repeat}
    if default_factory is not None:
        return field(default_factory=default_factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def flag_of(name: str) -> str:
    """The flag of the field ``name``: ``max_in_flight`` is ``--max-in-flight``."""
    return "--" + name.replace("_", "-")


def _fields(config: type[Any], names: Iterable[str] | None) -> list[dataclasses.Field[Any]]:
    by_name = {each.name: each for each in dataclasses.fields(config) if "doc" in each.metadata}
    return list(by_name.values()) if names is None else [by_name[name] for name in names]


def _default(each: dataclasses.Field[Any]) -> Any:
    if each.default_factory is not MISSING:
        return each.default_factory()
    return None if each.default is MISSING else each.default


def add_options(
    parser: EnvArgumentParser,
    config: type[Any],
    names: Iterable[str] | None = None,
    *,
    defaults: Mapping[str, Any] | None = None,
    docs: Mapping[str, str] | None = None,
) -> None:
    """Declare a flag (and its environment variable) for each field of ``config`` made with
    :func:`setting`, or for each of ``names``; ``defaults`` overrides a field's default and
    ``docs`` its help, for a command where the field means something narrower."""
    for each in _fields(config, names):
        meta = each.metadata
        default = (defaults or {}).get(each.name, _default(each))
        doc = (docs or {}).get(each.name, meta["doc"])
        if meta["switch"]:
            parser.option(flag_of(each.name), default=default, help=doc, switch=True)
            continue
        parser.option(
            flag_of(each.name),
            parse=meta["parse"],
            default=list(default) if meta["repeat"] and default is not None else default,
            help=doc,
            repeat=meta["repeat"],
            metavar=meta["metavar"],
        )


def from_namespace(config: type[T], args: argparse.Namespace, *, env_prefix: str) -> T:
    """Build ``config`` from parsed flags (the fields ``args`` has; the others keep their
    defaults). A value its checks refuse is a SettingError naming the flag and variable."""
    values: dict[str, Any] = {}
    for each in dataclasses.fields(config):  # type: ignore[arg-type]
        if hasattr(args, each.name):
            value = getattr(args, each.name)
            if each.metadata.get("repeat") and isinstance(value, list):
                value = tuple(value)
            values[each.name] = value
    try:
        return config(**values)
    except SettingError as exc:
        name, sep, problem = str(exc).partition(": ")
        if not sep or not name.isidentifier():
            raise
        raise SettingError(f"{flag_of(name)} (or {env_prefix}{name.upper()}): {problem}") from None
