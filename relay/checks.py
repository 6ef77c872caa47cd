"""Request checks: whether a job request can run on this relay, before anything is spent on it.

The request's bytes are parsed by forgiving deserializers: gRPC would answer
UNKNOWN for a decoding error, but bytes that do not parse are the client's
mistake, so they become a request that :class:`RequestChecks` refuses with
INVALID_ARGUMENT. Then the job id, the kind and the payload's size are checked;
each problem is a :class:`relay.errors.Refused` that says what was wrong.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TypeAlias

from google.protobuf.message import DecodeError

from bunnyrelay.v1.jobs_pb2 import JobBatch, JobRequest
from relay.errors import InvalidRequest, PayloadTooLarge, UnknownKind
from relay.kinds.handler import Handler

_JOB_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")

UNREADABLE = JobRequest()
"""What :func:`parse_request` returns for bytes that are not a JobRequest (never mutated)."""

UNREADABLE_BATCH = JobBatch()
"""What :func:`parse_batch` returns for bytes that are not a JobBatch (never mutated)."""

Checked: TypeAlias = tuple[Handler, str, str, bytes]
"""A request that passed the checks: its handler, job id, kind and payload. The fields
come along because each read of a protobuf field makes a new object: the runner reads
them here, once."""


def parse_request(data: bytes) -> JobRequest:
    """``Run``'s and ``RunStream``'s deserializer: bytes that do not parse become
    :data:`UNREADABLE`, which the checks refuse with INVALID_ARGUMENT."""
    try:
        return JobRequest.FromString(data)
    except DecodeError:
        return UNREADABLE


def parse_batch(data: bytes) -> JobBatch:
    """``RunBatches``' deserializer; a message that does not parse becomes
    :data:`UNREADABLE_BATCH`, and the call ends INVALID_ARGUMENT."""
    try:
        return JobBatch.FromString(data)
    except DecodeError:
        return UNREADABLE_BATCH


class RequestChecks:
    """The checks of one relay: its kinds and its payload limit."""

    def __init__(self, handlers: Mapping[str, Handler], max_payload_bytes: int) -> None:
        self._handlers = dict(handlers)
        self.known_kinds = tuple(sorted(self._handlers))
        self._max_payload = max_payload_bytes
        self._job_id_ok = _JOB_ID.fullmatch

    def handler(self, request: JobRequest) -> Handler:
        """The handler for ``request``, or :class:`relay.errors.Refused` saying why not."""
        return self.check(request)[0]

    def check(self, request: JobRequest) -> Checked:
        """``request``'s handler and fields, or :class:`relay.errors.Refused` saying why not."""
        job_id = request.job_id
        if not self._job_id_ok(job_id):
            if request is UNREADABLE:
                raise InvalidRequest.unreadable()
            raise InvalidRequest.job_id(job_id)
        kind = request.kind
        handler = self._handlers.get(kind)
        if handler is None:
            if not kind:
                raise InvalidRequest.missing_kind()
            raise UnknownKind.of(kind, self.known_kinds)
        payload = request.payload
        size = len(payload)
        if size > self._max_payload:
            raise PayloadTooLarge.of(size, self._max_payload)
        return handler, job_id, kind, payload
