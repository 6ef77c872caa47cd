"""What bunny reports for each job: one JobOutcome, printed as one JSON line."""

from __future__ import annotations

import base64
import dataclasses
from dataclasses import dataclass, field
from typing import Any

import grpc

from bunny.dns.model import Resolution
from bunny.errors import BunnyError, DnsLookupFailed, RelayCallFailed
from bunnyrelay.v1 import jobs_pb2

SUCCEEDED = "SUCCEEDED"
FAILED = "FAILED"


@dataclass(frozen=True, slots=True)
class OutcomeError:
    """Why a job failed, whichever side failed it."""

    type: str
    """bunny's error class (``NameNotFound``, ``RelayUnavailable`` …), or ``JobFailed``
    when relay ran the job and it failed."""
    message: str
    code: str = ""
    """A gRPC status code name when relay (or the channel) gave one."""
    reason: str = ""
    """relay's machine-readable reason, e.g. ``JOB_FAILED``, ``UNKNOWN_KIND``."""
    likely_cause: str = ""
    """For a failed lookup, what that class of DNS failure usually means on the path."""

    @classmethod
    def from_exception(cls, exc: BunnyError) -> OutcomeError:
        if isinstance(exc, RelayCallFailed):
            return cls(type(exc).__name__, str(exc), exc.code.name, exc.reason)
        if isinstance(exc, DnsLookupFailed):
            return cls(type(exc).__name__, str(exc), likely_cause=exc.likely_cause)
        return cls(type(exc).__name__, str(exc))

    def because(self, why: str) -> OutcomeError:
        """The same error, its message followed by ``why`` (why bunny gave up on it)."""
        return dataclasses.replace(self, message=f"{self.message}; {why}")

    @classmethod
    def from_result(cls, error: jobs_pb2.JobError) -> OutcomeError:
        code = _CODE_NAMES.get(error.code, str(error.code))
        return cls("JobFailed", error.message, code, error.reason)


_CODE_NAMES = {status.value[0]: status.name for status in grpc.StatusCode}


# Not frozen: a frozen dataclass sets each of its 14 fields through object.__setattr__,
# which more than doubles the cost of making one, once per job. Nothing changes an
# outcome once the submitter has made it.
@dataclass(slots=True)
class JobOutcome:
    job_id: str
    kind: str
    status: str
    """``SUCCEEDED`` or ``FAILED``."""
    output: bytes
    relay_address: str | None
    """The ``IP:PORT`` that served the final attempt, or None when no call was made."""
    relay_instance: str
    attempts: int
    """RPC attempts made (0 when the lookup failed before any call)."""
    trace_id: str
    replayed: bool
    duration_ms: float
    dns_source: str | None
    error: OutcomeError | None = None
    resolution: Resolution | None = field(default=None, repr=False, compare=False)
    """The DNS answer the last attempt used (None when the lookup failed)."""

    @property
    def ok(self) -> bool:
        return self.status == SUCCEEDED

    def as_dict(self) -> dict[str, Any]:
        try:
            output: str | None = self.output.decode("utf-8")
            output_b64 = None
        except UnicodeDecodeError:
            output, output_b64 = None, base64.b64encode(self.output).decode("ascii")
        line: dict[str, Any] = {
            "job_id": self.job_id,
            "kind": self.kind,
            "status": self.status,
            "output": output,
            "relay_address": self.relay_address,
            "relay_instance": self.relay_instance or None,
            "attempts": self.attempts,
            "trace_id": self.trace_id,
            "replayed": self.replayed,
            "duration_ms": round(self.duration_ms, 3),
            "dns_source": self.dns_source,
            "error": None,
        }
        if output_b64 is not None:
            line["output_base64"] = output_b64
        if self.error is not None:
            line["error"] = {
                "type": self.error.type,
                "message": self.error.message,
                "code": self.error.code or None,
                "reason": self.error.reason or None,
                "likely_cause": self.error.likely_cause or None,
            }
        return line
