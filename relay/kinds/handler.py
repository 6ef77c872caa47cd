"""What a job kind's handler gets, returns and raises.

A handler is an ``async`` function from a :class:`JobInput` to output bytes.
It reports that the job cannot succeed by raising :class:`JobFailed` (or a
subclass); the caller gets a normal result with status FAILED and the error's
``code``, ``reason`` and ``retryable``. Any other exception is a bug in the
handler: the caller gets FAILED with reason ``HANDLER_ERROR`` and relay logs
the traceback. Handlers run on relay's event loop, so blocking or CPU-heavy
work belongs in ``await asyncio.to_thread(...)``; the caller's deadline
cancels a handler at its next ``await``.

Failures a handler can raise::

    JobFailed            FAILED_PRECONDITION  JOB_FAILED       the job cannot succeed
    └── InvalidPayload   INVALID_ARGUMENT     INVALID_PAYLOAD  not what the kind expects

A failure with ``retryable = False`` is final and is remembered for the job's
id like a success, so a resubmission does not run the handler again; a
subclass that sets ``retryable = True`` is forgotten, so the same id can run
again later.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import ClassVar

import grpc


@dataclass(frozen=True, slots=True)
class JobInput:
    """What a handler sees of a job request."""

    job_id: str
    """The client's idempotency key; the same id is never run twice to completion."""
    kind: str
    """The name the handler was registered under."""
    payload: bytes
    """The request's payload, at most relay's ``--max-payload-bytes``."""
    attributes: Mapping[str, str]
    """The request's string attributes (read-only)."""


Handler = Callable[[JobInput], Awaitable[bytes]]


class JobFailed(Exception):  # noqa: N818 - reads as what happened to the job
    """The job ran and cannot succeed; ``str(exc)`` is the message the caller sees."""

    code: ClassVar[grpc.StatusCode] = grpc.StatusCode.FAILED_PRECONDITION
    reason: ClassVar[str] = "JOB_FAILED"
    retryable: ClassVar[bool] = False


class InvalidPayload(JobFailed):
    """The payload is not what this kind expects; resubmitting it unchanged cannot help."""

    code = grpc.StatusCode.INVALID_ARGUMENT
    reason = "INVALID_PAYLOAD"


_KIND_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def check_kind_name(name: str) -> None:
    """Raise ValueError unless ``name`` can be a kind's name (it appears in spans and metrics)."""
    if not _KIND_NAME.fullmatch(name):
        raise ValueError(
            f"kind name {name!r} must be 1-64 characters of [A-Za-z0-9._-], "
            "starting with a letter or digit"
        )


@dataclass(frozen=True, slots=True)
class Kind:
    """A job kind: the name clients send in ``JobRequest.kind`` and the handler that runs it."""

    name: str
    handler: Handler

    def __post_init__(self) -> None:
        check_kind_name(self.name)
        if not inspect.iscoroutinefunction(self.handler):
            raise TypeError(f"the handler for kind {self.name!r} must be an async function")


def kind(name: str) -> Callable[[Handler], Kind]:
    """Make the decorated ``async def handler(job: JobInput) -> bytes`` the kind ``name``."""
    check_kind_name(name)

    def make(handler: Handler) -> Kind:
        return Kind(name, handler)

    return make
