"""Counters for hot paths: an add is a dict increment; the SDK reads the totals when it collects.

The OpenTelemetry SDK's ``Counter.add`` builds a ``Measurement``, re-validates
and hashes its attributes and takes a lock, every call: about 20 µs here, which
on a per-job path is more than relay's own work for an echo job. A
:class:`Tally` keeps one running total per attribute set instead and reports
the totals through an observable counter, whose callback the SDK calls once per
collection. What an exporter sees is the same monotonic sum with the same
attributes (cumulative or delta, as the reader prefers); only exemplars, which
observable instruments cannot carry, are gone, and bunny and relay turn those
off anyway (:mod:`bunnyrelay.telemetry`).

Adds come from the event loop's thread and the callback from the reader's; a
copy of a dict is made by C code that holds the GIL throughout, so the callback
never sees a dict that changes under it.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping

from opentelemetry.metrics import CallbackOptions, Meter, Observation
from opentelemetry.util.types import AttributeValue


class Tally:
    """A monotonic counter whose attribute sets are named by keys the caller already has."""

    __slots__ = ("_attributes", "_totals")

    def __init__(self, meter: Meter, name: str, *, unit: str, description: str) -> None:
        self._totals: dict[Hashable, int] = {}
        self._attributes: dict[Hashable, Mapping[str, AttributeValue]] = {}
        meter.create_observable_counter(
            name, callbacks=[self._observe], unit=unit, description=description
        )

    def add(self, key: Hashable, attributes: Mapping[str, AttributeValue], amount: int = 1) -> None:
        """Count ``amount`` under ``attributes``, which ``key`` must name one-to-one."""
        totals = self._totals
        total = totals.get(key)
        if total is None:
            self._attributes[key] = dict(attributes)
            totals[key] = amount
        else:
            totals[key] = total + amount

    def total(self, key: Hashable) -> int:
        return self._totals.get(key, 0)

    def _observe(self, options: CallbackOptions) -> Iterable[Observation]:
        totals = dict(self._totals)
        attributes = dict(self._attributes)
        return [Observation(total, attributes[key]) for key, total in totals.items()]
