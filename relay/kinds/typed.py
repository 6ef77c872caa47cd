"""Kinds whose payload and output are protobuf messages of the contract, not raw bytes.

::

    @typed_kind("wordcount", WordCountRequest)
    async def wordcount(request: WordCountRequest, job: JobInput) -> WordCountResult:
        ...

The payload is parsed into the request type before the handler runs; one that
does not parse is the client's mistake, answered ``INVALID_PAYLOAD`` naming
the type the kind expects. The handler's message is serialized as the job's
output. Unknown fields are kept, as protobuf does, so a client built against
a newer contract still gets its job run.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import TypeVar

from google.protobuf.message import DecodeError, Message

from relay.kinds.handler import InvalidPayload, JobInput, Kind

Request = TypeVar("Request", bound=Message)

TypedHandler = Callable[[Request, JobInput], Awaitable[Message]]


def typed_kind(name: str, request_type: type[Request]) -> Callable[[TypedHandler[Request]], Kind]:
    """Make the decorated ``async def handler(request, job) -> Message`` the kind ``name``."""
    expected = request_type.DESCRIPTOR.full_name

    def make(handler: TypedHandler[Request]) -> Kind:
        @functools.wraps(handler)
        async def run(job: JobInput) -> bytes:
            try:
                request = request_type.FromString(job.payload)
            except DecodeError as exc:
                raise InvalidPayload(
                    f"the {name} kind expects its payload to be a serialized {expected} "
                    f"message; this one does not parse ({exc})"
                ) from None
            output = await handler(request, job)
            return output.SerializeToString()

        return Kind(name, run)

    return make
