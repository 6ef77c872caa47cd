"""relay's state as gauges an operator alerts on: jobs in flight, the limit, ready or not.

Observable instruments, read by the metric reader when it collects: a job pays
nothing for them. ``in_flight / limit`` is how saturated relay is (at 1 it
refuses with OVERLOADED; the refusals are ``bunnyrelay.jobs`` with that
``error.type``); ``ready`` is 1 while relay takes jobs and 0 while it starts or
drains, so a relay that stays at 0 is one the load balancer no longer sends to.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from opentelemetry.metrics import CallbackOptions, Meter, Observation
from opentelemetry.util.types import AttributeValue

from bunnyrelay import semconv
from relay.admission import Admission


class RelayGauges:
    """Registers the gauges on ``meter``; they read ``admission`` and ``ready()`` when collected."""

    def __init__(
        self, meter: Meter, admission: Admission, ready: Callable[[], bool], *, instance: str
    ) -> None:
        self._admission = admission
        self._ready = ready
        self._attributes: dict[str, AttributeValue] = {semconv.RELAY_INSTANCE: instance}
        # Up-down counters, not gauges: summed over relays they are the fleet's totals.
        meter.create_observable_up_down_counter(
            semconv.METRIC_RELAY_JOBS_IN_FLIGHT,
            callbacks=[self._in_flight],
            unit="{job}",
            description="Jobs relay is running now",
        )
        meter.create_observable_up_down_counter(
            semconv.METRIC_RELAY_JOBS_LIMIT,
            callbacks=[self._limit],
            unit="{job}",
            description="Jobs relay runs at once before it refuses with OVERLOADED",
        )
        meter.create_observable_up_down_counter(
            semconv.METRIC_RELAY_READY,
            callbacks=[self._readiness],
            unit="{relay}",
            description="1 while relay takes jobs (health SERVING), 0 while it starts or drains",
        )

    def _in_flight(self, options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(self._admission.in_flight, self._attributes)]

    def _limit(self, options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(self._admission.limit, self._attributes)]

    def _readiness(self, options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(1 if self._ready() else 0, self._attributes)]
