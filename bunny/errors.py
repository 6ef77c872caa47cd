"""What can go wrong in bunny, as one tree. Whether a retry can help is a property of the class.

::

    BunnyError                  .retryable
    │
    ├── DnsLookupFailed         (DNS: which name, which nameserver, which rcode, the queries sent)
    │   ├── InvalidName         no    the name cannot be asked at all
    │   ├── NameNotFound        no    NXDOMAIN for every candidate FQDN
    │   ├── NoAddresses         no    the name exists but has no A/AAAA records (NODATA)
    │   ├── DnsTimeout          yes   no answer in time, or the caller's deadline came first
    │   ├── DnsServerFailure    yes   SERVFAIL (or NOTIMP) from the nameserver
    │   ├── DnsRefused          yes   REFUSED from the nameserver
    │   ├── DnsUnreachable      yes   connection refused / network unreachable
    │   └── DnsBadAnswer        yes   malformed, garbage, or records for another name
    │
    └── RelayCallFailed         (RPC: the gRPC status, the peer, relay's reason)
        ├── RelayUnavailable    yes   unreachable, connection reset, relay draining, or the
        │                             call cut off (CANCELLED by a relay that is stopping)
        │   └── RelayTlsFailed  yes   relay's certificate failed bunny's checks (wrong
        │                             name, unknown CA, expired): fix the files; a
        │                             rotation in progress, or another replica, may pass
        ├── RelayOverloaded     yes   too many jobs in flight; relay says when to come back
        ├── JobRejected         no    the request is wrong: bad id, unknown kind, too large,
        │                             an id reused for another request
        └── JobDeadlineExceeded no    the job's deadline passed

NXDOMAIN and NODATA are answers, not failures of the path: asking again gets the
same answer, so they are not retryable. Everything else in the DNS subtree says
the path to the answer failed this time.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import grpc

from bunny.dns.model import DnsQuery


class BunnyError(Exception):
    """Base of everything bunny raises on purpose."""

    retryable: ClassVar[bool] = False
    """True when the same request may succeed if made again."""


# --- DNS -------------------------------------------------------------------------------


# Named for what happened (NameNotFound, DnsTimeout…), not with an "Error" suffix.
class DnsLookupFailed(BunnyError):  # noqa: N818
    """Resolving ``name`` failed; the subclass says how.

    ``queries`` are the queries of this lookup (every candidate FQDN, type and
    attempt), so a caller can show what was sent without reading traces.
    """

    rcode: str = ""
    """The rcode or condition behind this failure: NXDOMAIN, NODATA, TIMEOUT, SERVFAIL…"""
    likely_cause: ClassVar[str] = ""
    """What this class of failure usually means on the cross-cloud path, in words."""

    def __init__(
        self,
        name: str,
        *,
        fqdn: str | None = None,
        qtype: str | None = None,
        candidates: Sequence[str] = (),
        nameservers: Sequence[str] = (),
        attempts: int = 0,
        queries: Sequence[DnsQuery] = (),
        rcode: str | None = None,
        detail: str = "",
        from_negative_cache: bool = False,
    ) -> None:
        self.name = name
        """The name as the caller asked it."""
        self.fqdn = fqdn if fqdn is not None else name
        """The candidate FQDN being asked when it failed (for whole-lookup errors: the last one)."""
        self.qtype = qtype
        """The query type that failed (A or AAAA), when one query's failure ended the lookup."""
        self.candidates = tuple(candidates) or (self.fqdn,)
        self.nameservers = tuple(dict.fromkeys(nameservers))
        """Nameservers asked, ``IP:PORT``, in order, each once."""
        self.attempts = attempts
        """Attempts made for the failing query (per FQDN and type)."""
        self.queries = tuple(queries)
        if rcode is not None:
            self.rcode = rcode
        self.detail = detail
        self.from_negative_cache = from_negative_cache
        """True when raised from bunny's negative cache (RFC 2308) without asking again."""
        message = self._describe()
        if from_negative_cache:
            message += " [from the negative cache]"
        super().__init__(message)

    def again_from_negative_cache(self) -> DnsLookupFailed:
        """The same failure, raised again from the negative cache: no queries this time."""
        return type(self)(
            self.name,
            fqdn=self.fqdn,
            qtype=self.qtype,
            candidates=self.candidates,
            nameservers=self.nameservers,
            attempts=0,
            queries=(),
            rcode=self.rcode,
            detail=self.detail,
            from_negative_cache=True,
        )

    # Message pieces shared by the subclasses.

    def _subject(self) -> str:
        return self.name if self.fqdn == self.name.rstrip(".") else f"{self.name} (as {self.fqdn})"

    def _servers(self) -> str:
        return ", ".join(self.nameservers) if self.nameservers else "no nameserver"

    def _after(self) -> str:
        if self.attempts < 1:
            return ""
        return f" after {self.attempts} attempt{'s' if self.attempts != 1 else ''}"

    def _describe(self) -> str:
        return f"{self._subject()}: {self.rcode or 'lookup failed'} from {self._servers()}"


class InvalidName(DnsLookupFailed):
    """The name is not something DNS can be asked about (empty, a label over 63 bytes…)."""

    rcode = "BADNAME"
    likely_cause = "the name itself cannot be asked: fix the target"

    def _describe(self) -> str:
        return f"{self.name!r} is not a valid DNS name: {self.detail}"


class NameNotFound(DnsLookupFailed):
    """NXDOMAIN for every candidate FQDN: the name does not exist."""

    rcode = "NXDOMAIN"
    likely_cause = (
        "the record is missing from the zone, or a hop lacks the conditional forward "
        "for the zone (bunny diagnose --hop … tells which)"
    )

    def _describe(self) -> str:
        if len(self.candidates) > 1:
            tried = ", ".join(self.candidates)
            return f"{self.name}: NXDOMAIN for every candidate ({tried}) from {self._servers()}"
        return f"{self._subject()}: NXDOMAIN from {self._servers()}"


class NoAddresses(DnsLookupFailed):
    """The name exists but has no A/AAAA records of the family asked for (NODATA)."""

    rcode = "NODATA"
    likely_cause = "the name exists but has no address record of the family asked for"

    def _describe(self) -> str:
        return (
            f"{self._subject()}: no address records (NOERROR, no data) from {self._servers()}"
            + (f"; {self.detail}" if self.detail else "")
        )


class DnsTimeout(DnsLookupFailed):
    """No answer in time: dropped queries, a silent nameserver, or the deadline came first."""

    retryable = True
    rcode = "TIMEOUT"
    likely_cause = (
        "the nameserver or a hop beyond it does not answer: "
        "a cut or slow VPN tunnel, or a resolver that is down"
    )

    def _describe(self) -> str:
        why = f" ({self.detail})" if self.detail else ""
        return f"{self._subject()}: no answer from {self._servers()}{self._after()}{why}"


class DnsServerFailure(DnsLookupFailed):
    """SERVFAIL (or NOTIMP): the nameserver could not answer, e.g. its upstream failed."""

    retryable = True
    rcode = "SERVFAIL"
    likely_cause = (
        "an upstream of the nameserver failed, e.g. the forwarder could not get an answer "
        "from the AWS side: a cut VPN tunnel, or a resolver beyond it that is down"
    )

    def _describe(self) -> str:
        return f"{self._subject()}: {self.rcode} from {self._servers()}{self._after()}"


class DnsRefused(DnsLookupFailed):
    """REFUSED: the nameserver will not answer this question for us."""

    retryable = True
    rcode = "REFUSED"
    likely_cause = (
        "an ACL on the nameserver rejects this client, or it does not serve the zone to it"
    )

    def _describe(self) -> str:
        return f"{self._subject()}: REFUSED from {self._servers()}{self._after()}"


class DnsUnreachable(DnsLookupFailed):
    """The nameserver could not be reached at all (connection refused, no route)."""

    retryable = True
    rcode = "UNREACHABLE"
    likely_cause = "nothing listens at the nameserver's address, or there is no route to it"

    def _describe(self) -> str:
        why = f" ({self.detail})" if self.detail else ""
        return f"{self._subject()}: {self._servers()} unreachable{why}{self._after()}"


class DnsBadAnswer(DnsLookupFailed):
    """An answer that cannot be used: malformed, garbage, or records for another name."""

    retryable = True
    rcode = "BADRESP"
    likely_cause = "a hop sent a malformed answer or records for another name"

    def _describe(self) -> str:
        why = f": {self.detail}" if self.detail else ""
        return f"{self._subject()}: bad answer from {self._servers()}{self._after()}{why}"


# --- RPC: talking to relay --------------------------------------------------------


class RelayCallFailed(BunnyError):  # noqa: N818
    """A call to relay ended with a gRPC status other than OK."""

    def __init__(
        self, message: str, *, code: grpc.StatusCode, peer: str | None, reason: str = ""
    ) -> None:
        super().__init__(message)
        self.code = code
        self.peer = peer
        self.reason = reason


class RelayUnavailable(RelayCallFailed):
    """relay could not be reached, reset the connection, is draining or cut the call off
    while stopping: another try may work."""

    retryable = True


class RelayTlsFailed(RelayUnavailable):
    """The TLS handshake with relay failed on bunny's side: relay's certificate is not for
    the name bunny resolved, not signed by a CA it trusts, or expired. (When relay turns
    bunny's certificate away, TLS 1.3 lets bunny see only a closed connection:
    a plain :class:`RelayUnavailable`; relay's log says why.)"""


class RelayOverloaded(RelayCallFailed):
    """relay has too many jobs in flight and said when to come back (``grpc-retry-pushback-ms``)."""

    retryable = True

    def __init__(
        self,
        message: str,
        *,
        code: grpc.StatusCode,
        peer: str | None,
        reason: str = "",
        pushback_s: float | None,
    ) -> None:
        super().__init__(message, code=code, peer=peer, reason=reason)
        self.pushback_s = pushback_s


class JobRejected(RelayCallFailed):
    """relay refused the job as given (bad id, unknown kind, too large, id reused): do not retry."""


class JobDeadlineExceeded(RelayCallFailed):
    """The job's deadline passed before a result came back."""
