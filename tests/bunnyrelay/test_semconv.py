"""The names bunny and relay give spans, metrics and attributes: the OpenTelemetry semantic
conventions' own where one exists, and one prefix for everything this project adds."""

from __future__ import annotations

import importlib
import pkgutil

from bunnyrelay import semconv


def _convention_names() -> set[str]:
    """Every attribute and metric name the installed semantic conventions package defines."""
    names: set[str] = set()
    for package in ("attributes", "metrics", "_incubating.attributes", "_incubating.metrics"):
        path = importlib.import_module(f"opentelemetry.semconv.{package}").__path__
        for module in pkgutil.iter_modules(path, prefix=f"opentelemetry.semconv.{package}."):
            loaded = importlib.import_module(module.name)
            names.update(
                value
                for key, value in vars(loaded).items()
                if key.isupper() and isinstance(value, str)
            )
    assert len(names) > 100, "the semantic conventions package moved its modules"
    return names


def _ours() -> dict[str, str]:
    return {
        key: value
        for key, value in vars(semconv).items()
        if key.isupper() and isinstance(value, str) and key != "PREFIX"
    }


def test_every_name_without_the_prefix_is_one_the_conventions_define() -> None:
    conventions = _convention_names()
    # Span and event names are free text in the conventions, not a registry.
    borrowed = {
        key: value
        for key, value in _ours().items()
        if not value.startswith(semconv.PREFIX) and not key.startswith(("SPAN_", "EVENT_"))
    }
    assert borrowed, "the conventions' names are used where one exists"
    assert {key: value for key, value in borrowed.items() if value not in conventions} == {}


def test_the_projects_own_names_share_one_prefix_and_never_collide() -> None:
    own = [value for value in _ours().values() if value.startswith(semconv.PREFIX)]
    assert len(own) == len(set(own))
    assert not set(own) & _convention_names()
