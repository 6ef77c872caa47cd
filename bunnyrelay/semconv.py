"""Span, metric and attribute names, in one place.

Names from the OpenTelemetry semantic conventions are used where one exists
(``dns.*``, ``rpc.*``, ``server.*``, ``network.*``, ``error.type``); the ones
this project adds all share the ``bunnyrelay.`` prefix.
"""

from typing import Final

# --- OpenTelemetry semantic conventions -------------------------------------------
DNS_QUESTION_NAME: Final = "dns.question.name"
DNS_ANSWERS: Final = "dns.answers"
ERROR_TYPE: Final = "error.type"
RPC_SYSTEM: Final = "rpc.system"
RPC_SERVICE: Final = "rpc.service"
RPC_METHOD: Final = "rpc.method"
RPC_GRPC_STATUS_CODE: Final = "rpc.grpc.status_code"
SERVER_ADDRESS: Final = "server.address"
SERVER_PORT: Final = "server.port"
NETWORK_PEER_ADDRESS: Final = "network.peer.address"
NETWORK_PEER_PORT: Final = "network.peer.port"
NETWORK_TRANSPORT: Final = "network.transport"

METRIC_DNS_LOOKUP_DURATION: Final = "dns.lookup.duration"
METRIC_RPC_CLIENT_DURATION: Final = "rpc.client.duration"
METRIC_RPC_SERVER_DURATION: Final = "rpc.server.duration"

# --- bunny/relay's own, one prefix -------------------------------------------------
PREFIX: Final = "bunnyrelay."

JOB_ID: Final = "bunnyrelay.job.id"
JOB_KIND: Final = "bunnyrelay.job.kind"
JOB_STATUS: Final = "bunnyrelay.job.status"
JOB_ATTEMPT: Final = "bunnyrelay.job.attempt"
JOB_REPLAYED: Final = "bunnyrelay.job.replayed"
RELAY_INSTANCE: Final = "bunnyrelay.relay.instance"

DNS_QUESTION_TYPE: Final = "bunnyrelay.dns.question.type"
DNS_NAMESERVER: Final = "bunnyrelay.dns.nameserver"
DNS_RCODE: Final = "bunnyrelay.dns.rcode"
DNS_TTL: Final = "bunnyrelay.dns.ttl"
DNS_ATTEMPT: Final = "bunnyrelay.dns.attempt"
# Where an answer came from: "hosts", "wire", "c-ares-cache", "cache", "stale-cache",
# "negative-cache", or "literal" (an IP target).
DNS_SOURCE: Final = "bunnyrelay.dns.source"
DNS_CANDIDATES: Final = "bunnyrelay.dns.candidates"
DNS_QUERIES_SENT: Final = "bunnyrelay.dns.queries_sent"
DNS_HOP: Final = "bunnyrelay.dns.hop"
# For a failed lookup: what that class of failure usually means on the cross-cloud path.
DNS_LIKELY_CAUSE: Final = "bunnyrelay.dns.likely_cause"
# A lookup that waited for one already in flight for the same name instead of asking itself.
DNS_COALESCED: Final = "bunnyrelay.dns.coalesced"
# Why a stale answer was served: the error type of the refresh that failed.
DNS_REFRESH_ERROR: Final = "bunnyrelay.dns.refresh_error"

# Why an unsampled trace was exported anyway: "error", "retried" or "slow" (bunnyrelay.keeping).
SAMPLING_KEPT: Final = "bunnyrelay.sampling.kept"
# Why a held unsampled trace was given up before its job ended: "cap" or "age".
SAMPLING_DROP_REASON: Final = "bunnyrelay.sampling.drop_reason"
METRIC_SAMPLING_KEPT: Final = "bunnyrelay.sampling.kept_traces"
METRIC_SAMPLING_DROPPED: Final = "bunnyrelay.sampling.dropped_traces"

SPAN_DNS_LOOKUP: Final = "dns.lookup"
SPAN_DNS_QUERY: Final = "dns.query"
EVENT_DNS_SERVE_STALE: Final = "bunnyrelay.dns.serve_stale"

METRIC_JOBS: Final = "bunnyrelay.jobs"

# --- Operator metrics: what a dashboard and an alert read -----------------------------
# Semantic-convention names for the idempotency store's calls (the database client conventions).
DB_SYSTEM_NAME: Final = "db.system.name"
DB_OPERATION_NAME: Final = "db.operation.name"
METRIC_DB_CLIENT_OPERATION_DURATION: Final = "db.client.operation.duration"

# How a lookup ended: "answered", "stale" (an expired answer, the refresh failed) or "failed".
DNS_OUTCOME: Final = "bunnyrelay.dns.outcome"
# Every lookup that went past bunny's fresh cache, by how it ended.
METRIC_DNS_LOOKUPS: Final = "bunnyrelay.dns.lookups"
# Queries one lookup sent to the wire: what the search list and ndots cost.
METRIC_DNS_LOOKUP_QUERIES: Final = "bunnyrelay.dns.lookup.queries"
# Each query sent to the wire, by nameserver and rcode.
METRIC_DNS_QUERY_DURATION: Final = "bunnyrelay.dns.query.duration"
# For each stale answer served: how long past its expiry it was.
METRIC_DNS_STALE_AGE: Final = "bunnyrelay.dns.stale.age"
# RPC attempts, summed over jobs: attempts per job is this over bunnyrelay.jobs.
METRIC_JOB_ATTEMPTS: Final = "bunnyrelay.job.attempts"
# A job from bunny's side, as its caller waited: the lookup, every attempt and backoff.
METRIC_JOB_DURATION: Final = "bunnyrelay.job.duration"
METRIC_RELAY_JOBS_IN_FLIGHT: Final = "bunnyrelay.relay.jobs.in_flight"
METRIC_RELAY_JOBS_LIMIT: Final = "bunnyrelay.relay.jobs.limit"
# 1 while relay's health says SERVING (ready for jobs), else 0.
METRIC_RELAY_READY: Final = "bunnyrelay.relay.ready"
