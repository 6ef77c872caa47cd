"""How much of what went wrong to keep: the settings of :mod:`bunnyrelay.keeping`.

Both processes take the same three settings (``--keep-slower-than``,
``--keep-max-waiting``, ``--keep-max-age``, with their ``BUNNY_`` / ``RELAY_``
variables). This module imports nothing from OpenTelemetry, so that a
process's ``--help`` and its flag checks stay quick.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from bunnyrelay.settings import SettingError

SLOWER_THAN_DOC = (
    "export the whole trace of a job that failed, was retried, or took at least this many "
    "seconds, whatever OTEL_TRACES_SAMPLER decided for it; 0 turns keeping off (only what "
    "the sampler picks is exported)"
)
MAX_WAITING_DOC = (
    "traces of unsampled jobs still running that are held in memory until the job ends (once "
    "a span such as a DNS lookup starts under the job's); past this many the oldest is "
    "dropped (and counted in bunnyrelay.sampling.dropped_traces)"
)
MAX_AGE_DOC = (
    "seconds an unsampled trace is held; an older one is dropped when another is taken "
    "(and counted in bunnyrelay.sampling.dropped_traces)"
)


def parse_slower_than(text: str) -> float:
    """Seconds, ``0`` for off."""
    try:
        value = float(text.strip().removesuffix("s"))
    except ValueError:
        raise SettingError(
            f"{text!r} is not a number of seconds (e.g. 1, 0.5; 0 turns keeping off)"
        ) from None
    if not (value >= 0 and math.isfinite(value)):
        raise SettingError(f"{text!r} must be a finite number of seconds, 0 or more")
    return value


def parse_max_age(text: str) -> float:
    try:
        value = float(text.strip().removesuffix("s"))
    except ValueError:
        raise SettingError(f"{text!r} is not a number of seconds") from None
    if not (value > 0 and math.isfinite(value)):
        raise SettingError(f"{text!r} must be a finite number of seconds, more than 0")
    return value


@dataclass(frozen=True, slots=True)
class KeepSettings:
    """What keeping (:mod:`bunnyrelay.keeping`) keeps and how much it holds."""

    slower_than_s: float = 1.0
    """A job at least this slow keeps its trace; 0: keeping is off altogether."""
    max_waiting: int = 4096
    """Unsampled traces held at once (one per job running)."""
    max_age_s: float = 300.0
    """A trace held longer than this is given up."""

    def __post_init__(self) -> None:
        if not (self.slower_than_s >= 0 and math.isfinite(self.slower_than_s)):
            raise SettingError(f"keep_slower_than: {self.slower_than_s} is not 0 or more seconds")
        if not 1 <= self.max_waiting <= 10_000_000:
            raise SettingError(f"keep_max_waiting: {self.max_waiting} is not in 1-10000000")
        if not (self.max_age_s > 0 and math.isfinite(self.max_age_s)):
            raise SettingError(f"keep_max_age: {self.max_age_s} must be more than 0 seconds")

    @property
    def on(self) -> bool:
        return self.slower_than_s > 0
