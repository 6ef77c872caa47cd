"""The progress of a ``bunny submit`` on stderr, drawn by rich: jobs done out of all, how
many succeeded and failed, jobs per second and the time so far (:mod:`bunny.progress`
decides when it is shown)."""

from __future__ import annotations

import sys

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text


class _Rate(ProgressColumn):
    """Jobs per second since the start."""

    def render(self, task: Task) -> Text:
        elapsed = task.elapsed or 0.0
        return Text(f"{task.completed / elapsed if elapsed > 0 else 0.0:,.0f} jobs/s")


class ProgressBar:
    def __init__(self, count: int) -> None:
        self._progress = Progress(
            TextColumn("jobs"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[succeeded]} succeeded, {task.fields[failed]} failed"),
            _Rate(),
            TimeElapsedColumn(),
            console=Console(stderr=True),
            # Job lines on the same terminal are printed above the bar; to a file or a pipe
            # they are left alone (rich would send them to stderr, with the bar).
            redirect_stdout=sys.stdout.isatty(),
            redirect_stderr=False,
        )
        self._task = self._progress.add_task("jobs", total=count, succeeded=0, failed=0)
        self._succeeded = self._failed = 0

    def __enter__(self) -> ProgressBar:
        self._progress.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._progress.stop()

    def finished(self, *, ok: bool) -> None:
        if ok:
            self._succeeded += 1
        else:
            self._failed += 1
        self._progress.update(self._task, advance=1, succeeded=self._succeeded, failed=self._failed)
