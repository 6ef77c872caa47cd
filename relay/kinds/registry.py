"""The kinds one relay runs, by name; the built-in ones are every kind found in relay/kinds/."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterable, Iterator, Mapping

from relay.kinds.handler import Handler, Kind, check_kind_name


class Registry:
    """Job kinds by name."""

    def __init__(self, kinds: Iterable[Kind] = ()) -> None:
        self._handlers: dict[str, Handler] = {}
        for each in kinds:
            self.add(each)

    @classmethod
    def builtin(cls) -> Registry:
        """Every kind defined in a module of the :mod:`relay.kinds` package."""
        import relay.kinds

        found: dict[int, Kind] = {}
        for module in pkgutil.iter_modules(relay.kinds.__path__):
            loaded = importlib.import_module(f"relay.kinds.{module.name}")
            for value in vars(loaded).values():
                if isinstance(value, Kind):
                    # A kind imported into another kind's module is still one kind.
                    found[id(value)] = value
        return cls(found.values())

    def add(self, kind: Kind) -> None:
        if kind.name in self._handlers:
            raise ValueError(f"kind {kind.name!r} is already registered")
        self._handlers[kind.name] = kind.handler

    def kind(self, name: str) -> Callable[[Handler], Handler]:
        """Register the decorated ``async def handler(job: JobInput) -> bytes`` as ``name``
        here (for kinds that belong to one relay only: tests, an embedding program)."""
        check_kind_name(name)

        def register(handler: Handler) -> Handler:
            self.add(Kind(name, handler))
            return handler

        return register

    def get(self, name: str) -> Handler | None:
        return self._handlers.get(name)

    def handlers(self) -> Mapping[str, Handler]:
        """A snapshot of the registered handlers; later registrations do not change it."""
        return dict(self._handlers)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(sorted(self._handlers))

    def copy(self) -> Registry:
        """A registry with the same kinds, to extend without touching this one."""
        clone = Registry()
        clone._handlers.update(self._handlers)
        return clone

    def __contains__(self, name: object) -> bool:
        return name in self._handlers

    def __iter__(self) -> Iterator[str]:
        return iter(self.names)

    def __len__(self) -> int:
        return len(self._handlers)
