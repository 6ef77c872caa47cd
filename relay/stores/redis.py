"""The Redis store (``--store redis://HOST:PORT/DB``): one memory of job ids for many replicas.

Guarantee: every relay that uses the same Redis and database shares it. A job
whose result any of them returned is never run again for the same ``job_id``
and request, whichever replica the resubmission reaches; it is replayed. A job
running on one replica is not started by another: a duplicate there waits for
the result (polling, bounded by its caller's deadline). A job whose relay died
mid-run runs again, once, when resubmitted after its claim's lease ran out
(:data:`CLAIM_LEASE_S`, or ``?claim_lease=SECONDS`` in the URL: shorter means
less waiting after a crash, but a relay whose event loop stalls for longer
than the lease loses its claim, and the job may then run twice). What
survives a restart of Redis itself is up to its persistence settings (AOF
with ``appendfsync everysec`` loses at most a second).

Keys, under ``bunnyrelay:v1:``, each step one round trip (a Lua script, atomic)::

    job:<id>     fingerprint + serialized JobResult       EX --dedupe-retention
    claim:<id>   fingerprint + owner                      PX lease, SET NX; renewed by
                                                          its owner while the job runs
    last:<id>    the latest claim not yet ended: runs,    EX --dedupe-retention
                 owner, time (to log a re-run after a crash)

The claim's owner is this relay process (instance name, pid and a random
suffix), so a restarted relay with the same pod name never mistakes the dead
process's claim for its own. All the claims a process holds are renewed in
one round trip every third of the lease.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import time
from collections.abc import Coroutine
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis.asyncio as aioredis
from google.protobuf.message import DecodeError
from redis.exceptions import RedisError

from bunnyrelay.settings import SettingError
from bunnyrelay.v1.jobs_pb2 import JobResult
from relay.errors import StoreError
from relay.stores.base import (
    DURABLE_CACHE_MAX,
    Claim,
    FingerprintMismatchError,
    IdempotencyStore,
    Replay,
)
from relay.stores.memory import LocalClaims, RecentResults

CLAIM_LEASE_S = 10.0
"""How long a claim outlives its holder: renewed every third of it while the job runs."""

KEY_PREFIX = "bunnyrelay:v1:"

MAX_CONNECTIONS = 64
"""Connections per relay; jobs beyond that wait for one (bounded by socket timeouts)."""

SOCKET_TIMEOUT_S = 5.0

_FP = 16  # bytes of a fingerprint at the start of job: and claim: values

# KEYS: job, claim, last. ARGV: fingerprint, owner, lease ms, retention s, now ms.
# Returns {0} mismatch, {1, result} done, {2, previous last or false} claimed,
# {3, owner, lease ms left} held by another.
_RESERVE = """
local done = redis.call('GET', KEYS[1])
if done then
  if string.sub(done, 1, 16) ~= ARGV[1] then return {0} end
  return {1, string.sub(done, 17)}
end
local mine = ARGV[1] .. ARGV[2]
if not redis.call('SET', KEYS[2], mine, 'NX', 'PX', ARGV[3]) then
  local holder = redis.call('GET', KEYS[2])
  if string.sub(holder, 1, 16) ~= ARGV[1] then return {0} end
  if holder ~= mine then
    return {3, string.sub(holder, 17), redis.call('PTTL', KEYS[2])}
  end
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
end
local last = redis.call('GET', KEYS[3])
local runs = 1
local previous = false
if last then
  local count, prior = string.match(last, '^(%d+)\\n([^\\n]*)\\n')
  count = tonumber(count) or 1
  if prior == ARGV[2] then
    runs = count
  else
    runs = count + 1
    previous = last
  end
end
redis.call('SET', KEYS[3], runs .. '\\n' .. ARGV[2] .. '\\n' .. ARGV[5], 'EX', ARGV[4])
return {2, previous}
"""

# KEYS: job, claim, last. ARGV: owner, fingerprint + result, retention s.
# Returns 1 when stored, 0 when a result was there already (a lease lost mid-job).
_COMPLETE = """
local stored = redis.call('SET', KEYS[1], ARGV[2], 'NX', 'EX', ARGV[3])
local holder = redis.call('GET', KEYS[2])
if holder and string.sub(holder, 17) == ARGV[1] then redis.call('DEL', KEYS[2]) end
redis.call('DEL', KEYS[3])
if stored then return 1 end
return 0
"""

# KEYS: claim, last. ARGV: owner.
_RELEASE = """
local holder = redis.call('GET', KEYS[1])
if holder and string.sub(holder, 17) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('DEL', KEYS[2])
end
return 0
"""

# KEYS: claims. ARGV: owner, lease ms.
_RENEW = """
local renewed = 0
for _, key in ipairs(KEYS) do
  local holder = redis.call('GET', key)
  if holder and string.sub(holder, 17) == ARGV[1] then
    redis.call('PEXPIRE', key, ARGV[2])
    renewed = renewed + 1
  end
end
return renewed
"""


LEASE_PARAMETER = "claim_lease"
"""``redis://…/0?claim_lease=SECONDS``: the claim lease, if not :data:`CLAIM_LEASE_S`."""


def check_url(url: str) -> str:
    """Check ``redis[s]://[USER:PASSWORD@]HOST[:PORT][/DB][?claim_lease=SECONDS]``;
    returns it unchanged."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise SettingError(f"{redact(url)!r} is not a Redis URL: {exc}") from None
    if parts.scheme not in ("redis", "rediss") or not parts.hostname:
        raise SettingError(f"{redact(url)!r}: expected redis://HOST:PORT/DB")
    db = parts.path.lstrip("/")
    if db and not db.isdigit():
        raise SettingError(f"{redact(url)!r}: the database must be a number, e.g. /0")
    if port == 0:
        raise SettingError(f"{redact(url)!r}: the port must be 1-65535")
    split_lease(url)
    return url


def split_lease(url: str) -> tuple[str, float]:
    """The URL for redis-py (without ``claim_lease``) and the claim lease in seconds."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    leases = [value for key, value in query if key == LEASE_PARAMETER]
    lease = CLAIM_LEASE_S
    if leases:
        try:
            lease = float(leases[-1])
        except ValueError:
            lease = -1.0
        if not 0.1 <= lease <= 3600:
            raise SettingError(
                f"{redact(url)!r}: {LEASE_PARAMETER} must be 0.1-3600 seconds, not {leases[-1]!r}"
            )
    rest = urlencode([(key, value) for key, value in query if key != LEASE_PARAMETER])
    return urlunsplit(parts._replace(query=rest)), lease


def redact(url: str) -> str:
    """The URL without its password, for logs and errors."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "redis://…"
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return parts._replace(netloc=user + netloc).geturl()


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


class RedisStore(IdempotencyStore):
    """Claims and results in Redis, shared by every relay using the same database."""

    def __init__(
        self,
        url: str,
        *,
        capacity: int,
        retention_s: float,
        instance: str,
        logger: logging.Logger,
        lease_s: float | None = None,
    ) -> None:
        self.url = url
        self._client_url, url_lease = split_lease(url)
        lease_s = url_lease if lease_s is None else lease_s
        self.retention_s = max(1, int(retention_s))
        self.lease_ms = max(100, int(lease_s * 1000))
        self.owner = f"{instance}#{os.getpid()}-{secrets.token_hex(3)}"
        self._log = logger
        self._claims = LocalClaims()
        self._recent = RecentResults(min(capacity, DURABLE_CACHE_MAX))
        self._held: dict[str, Claim] = {}
        self._client: aioredis.Redis | None = None
        self._renewer: asyncio.Task[None] | None = None
        self._scripts: dict[str, Any] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def client(self) -> aioredis.Redis:
        if self._client is None:
            raise RuntimeError("the Redis store is not open")
        return self._client

    async def open(self) -> None:
        pool = aioredis.BlockingConnectionPool.from_url(
            self._client_url,
            max_connections=MAX_CONNECTIONS,
            timeout=SOCKET_TIMEOUT_S,
            socket_timeout=SOCKET_TIMEOUT_S,
            socket_connect_timeout=SOCKET_TIMEOUT_S,
        )
        client = aioredis.Redis.from_pool(pool)  # closing the client closes the pool
        try:
            async with asyncio.timeout(SOCKET_TIMEOUT_S * 2):
                await client.ping()
        except (RedisError, OSError, TimeoutError) as exc:
            await client.aclose()
            raise StoreError(
                f"cannot reach the Redis store {redact(self.url)}: {exc or type(exc).__name__}"
            ) from None
        self._client = client
        for name, source in (
            ("reserve", _RESERVE),
            ("complete", _COMPLETE),
            ("release", _RELEASE),
            ("renew", _RENEW),
        ):
            self._scripts[name] = client.register_script(source)
        self._renewer = asyncio.get_running_loop().create_task(self._renew_forever())
        self._log.info(
            "idempotency store: Redis %s (claim lease %.1f s, retention %.1f h)",
            redact(self.url),
            self.lease_ms / 1000,
            self.retention_s / 3600,
            extra={"event": "store.open", "store": "redis", "url": redact(self.url)},
        )

    async def close(self) -> None:
        if self._renewer is not None:
            self._renewer.cancel()
            await asyncio.gather(self._renewer, return_exceptions=True)
            self._renewer = None
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    def _keys(self, job_id: str) -> list[str]:
        return [
            f"{KEY_PREFIX}job:{job_id}",
            f"{KEY_PREFIX}claim:{job_id}",
            f"{KEY_PREFIX}last:{job_id}",
        ]

    async def _call(self, script: str, keys: list[str], args: list[Any]) -> Any:
        try:
            return await self._scripts[script](keys=keys, args=args)
        except (RedisError, OSError) as exc:
            raise StoreError(f"Redis {redact(self.url)}: {exc or type(exc).__name__}") from None

    async def reserve(self, job_id: str, fingerprint: bytes) -> Replay | Claim:
        pause = 0.02
        while True:
            if await self._claims.wait_or_check(job_id, fingerprint):
                continue
            replay = self._recent.replay(job_id, fingerprint)
            if replay is not None:
                return replay
            claim = self._claims.add(job_id, fingerprint, confirmed=False)
            try:
                answer = await self._call(
                    "reserve",
                    self._keys(job_id),
                    [fingerprint, self.owner, self.lease_ms, self.retention_s, _now_ms()],
                )
            except BaseException:
                self._claims.forget(claim)
                # The claim may have been set before the answer was lost: let it go.
                self._release_soon(job_id)
                raise
            verdict = int(answer[0])
            if verdict == 2:
                claim.confirmed = True
                self._held[job_id] = claim
                if answer[1]:
                    self._log_reclaimed(job_id, _text(answer[1]))
                return claim
            self._claims.forget(claim)
            if verdict == 0:
                raise FingerprintMismatchError(job_id)
            if verdict == 1:
                try:
                    stored = bytes(answer[1])
                    result = JobResult.FromString(stored)
                except DecodeError:
                    raise StoreError(f"the stored result of {job_id!r} does not decode") from None
                self._recent.add(job_id, fingerprint, result, serialized=stored)
                return Replay(result)
            # Another relay runs it: ask again until it finishes or its lease runs out.
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.5)

    async def complete(self, claim: Claim, result: JobResult) -> None:
        self._held.pop(claim.job_id, None)
        # Duplicates waiting here get the result from memory even if Redis fails now.
        serialized = result.SerializeToString()
        self._recent.add(claim.job_id, claim.fingerprint, result, serialized=serialized)
        call = self._background(
            self._call(
                "complete",
                self._keys(claim.job_id),
                [self.owner, claim.fingerprint + serialized, self.retention_s],
            )
        )
        try:
            stored = await asyncio.shield(call)
        finally:
            self._claims.forget(claim)
        if not stored:
            self._log.warning(
                "job %s finished here after another relay had stored its result (this "
                "relay lost its claim's lease); the first result stays",
                claim.job_id,
                extra={"event": "store.lease_lost", "job_id": claim.job_id},
            )

    async def release(self, claim: Claim) -> None:
        self._claims.forget(claim)
        if self._held.pop(claim.job_id, None) is not None:
            self._release_soon(claim.job_id)

    def _release_soon(self, job_id: str) -> None:
        # Never awaited by the caller: release must not wait on anything a cancellation
        # could interrupt. A release that fails leaves the lease to run out.
        if self._client is None:
            return
        self._background(self._call("release", self._keys(job_id)[1:], [self.owner]))

    def _background(self, call: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """A task that finishes even if whoever started it is cancelled."""
        task = asyncio.get_running_loop().create_task(call)
        self._tasks.add(task)
        task.add_done_callback(self._finished)
        return task

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: a failure was reported to whoever awaited it

    async def _renew_forever(self) -> None:
        while True:
            await asyncio.sleep(self.lease_ms / 3000)
            if not self._held:
                continue
            keys = [self._keys(job_id)[1] for job_id in self._held]
            try:
                await self._call("renew", keys, [self.owner, self.lease_ms])
            except StoreError as exc:
                self._log.error(
                    "renewing %d claims failed: %s", len(keys), exc, extra={"event": "store.error"}
                )

    def _log_reclaimed(self, job_id: str, last: str) -> None:
        runs, _, rest = last.partition("\n")
        previous, _, at_ms = rest.partition("\n")
        self._log.warning(
            "job %s was claimed by %s and never finished (that relay stopped); "
            "running it again (run %d)",
            job_id,
            previous,
            int(runs) + 1 if runs.isdigit() else 2,
            extra={
                "event": "job.reclaimed",
                "job_id": job_id,
                "previous_owner": previous,
                "previous_claimed_at_ms": at_ms,
            },
        )


def _now_ms() -> int:
    return int(time.time() * 1000)
