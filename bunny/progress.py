"""How far a ``bunny submit`` of many jobs has got, for a person at a terminal.

Shown only then: never with ``--json``, never when stderr is not a terminal (a log file,
a pipe, a pod's output), and never for a single job. The display itself
(:mod:`bunny.progressbar`, drawn by rich) is imported only when it is shown, so a command
without a terminal never loads it.
"""

from __future__ import annotations

import sys
from types import TracebackType
from typing import Protocol, TextIO


class JobProgress(Protocol):
    """What ``submit`` tells the display as jobs finish."""

    def __enter__(self) -> JobProgress: ...

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None: ...

    def finished(self, *, ok: bool) -> None:
        """One more job has its outcome."""


class _NoProgress:
    def __enter__(self) -> _NoProgress:
        return self

    def __exit__(self, *_: object) -> None:
        return None

    def finished(self, *, ok: bool) -> None:
        return None


def wanted(count: int, *, as_json: bool, stderr: TextIO = sys.stderr) -> bool:
    """Whether to show progress: several jobs, for a person at a terminal."""
    return count > 1 and not as_json and stderr.isatty()


def job_progress(count: int, *, show: bool) -> JobProgress:
    """A display of ``count`` jobs when ``show`` (see :func:`wanted`), or one that does nothing."""
    if not show:
        return _NoProgress()
    from bunny.progressbar import ProgressBar

    return ProgressBar(count)
