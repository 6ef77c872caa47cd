"""Job kinds: the one place to add what relay can run.

A kind is an ``async`` function from a :class:`JobInput` to output bytes,
registered under a name::

    from relay.kinds import InvalidPayload, JobFailed, JobInput, registry

    @registry.kind("upper")
    async def upper(job: JobInput) -> bytes:
        if not job.payload:
            raise InvalidPayload("upper needs a payload")
        return job.payload.upper()

A handler reports that the job cannot succeed by raising :class:`JobFailed`
(or a subclass); the caller gets a normal result with status FAILED and the
error's ``code``, ``reason`` and ``retryable``. Any other exception is a bug in
the handler: the caller gets FAILED with reason ``HANDLER_ERROR`` and relay
logs the traceback. Handlers run on relay's event loop, so blocking or
CPU-heavy work belongs in ``await asyncio.to_thread(...)``; the caller's
deadline cancels a handler at its next ``await``.

Failures a handler can raise::

    JobFailed            FAILED_PRECONDITION  JOB_FAILED       the job cannot succeed
    └── InvalidPayload   INVALID_ARGUMENT     INVALID_PAYLOAD  not what the kind expects

A failure with ``retryable = False`` is final and is remembered for the job's
id like a success, so a resubmission does not run the handler again; a
subclass that sets ``retryable = True`` is forgotten, so the same id can run
again later.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import re
from collections.abc import Awaitable, Callable, Iterator, Mapping
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


class Registry:
    """Job kinds by name. Register with the :meth:`kind` decorator."""

    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}

    def kind(self, name: str) -> Callable[[Handler], Handler]:
        """Register the decorated ``async def handler(job: JobInput) -> bytes`` as ``name``."""
        if not _KIND_NAME.fullmatch(name):
            raise ValueError(
                f"kind name {name!r} must be 1-64 characters of [A-Za-z0-9._-], "
                "starting with a letter or digit"
            )

        def register(handler: Handler) -> Handler:
            if not inspect.iscoroutinefunction(handler):
                raise TypeError(f"the handler for kind {name!r} must be an async function")
            if name in self._handlers:
                raise ValueError(f"kind {name!r} is already registered")
            self._handlers[name] = handler
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
        """A registry with the same kinds, to extend without touching this one (tests)."""
        clone = Registry()
        clone._handlers.update(self._handlers)
        return clone

    def __contains__(self, name: object) -> bool:
        return name in self._handlers

    def __iter__(self) -> Iterator[str]:
        return iter(self.names)

    def __len__(self) -> int:
        return len(self._handlers)


registry = Registry()
"""The kinds ``relay serve`` runs. Add yours here, below the built-in ones."""


# --- built-in kinds ------------------------------------------------------------------

SLEEP_MAX_MS = 600_000
"""The longest ``sleep`` job: long enough for any demo, short enough not to pin a slot forever."""


def _preview(payload: bytes, limit: int = 32) -> str:
    return repr(payload[:limit]) + ("..." if len(payload) > limit else "")


@registry.kind("echo")
async def echo(job: JobInput) -> bytes:
    """Return the payload unchanged."""
    return job.payload


@registry.kind("sleep")
async def sleep(job: JobInput) -> bytes:
    """Sleep for the payload's ASCII milliseconds (at most 10 minutes)."""
    text = job.payload.strip()
    # bytes.isdigit is ASCII-only, so int() never sees signs, underscores or other scripts.
    if not text.isdigit() or len(text) > 9:
        raise InvalidPayload(
            "sleep expects the payload to be a whole number of milliseconds in ASCII, "
            f"e.g. b'250'; got {_preview(job.payload)}"
        )
    millis = int(text)
    if millis > SLEEP_MAX_MS:
        raise InvalidPayload(f"sleep is limited to {SLEEP_MAX_MS} ms (10 min); got {millis} ms")
    await asyncio.sleep(millis / 1000)
    return b"slept " + text + b" ms"


@registry.kind("sha256")
async def sha256(job: JobInput) -> bytes:
    """Return the hex SHA-256 digest of the payload."""
    return hashlib.sha256(job.payload).hexdigest().encode("ascii")


@registry.kind("fail")
async def fail(job: JobInput) -> bytes:
    """Always fail, with the payload as the message."""
    raise JobFailed(job.payload.decode("utf-8", "replace") or "the fail kind always fails")
