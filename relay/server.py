"""Building a relay: the grpc.aio server with JobService, health and reflection.

With ``health_listen`` a second, plaintext server carries the same health
servicer and nothing else, so the kubelet's gRPC probes (which cannot speak
TLS) see exactly what the main port's health service says, NOT_SERVING on
drain included, and no job can be sent around TLS.

In-process use (tests, benchmarks, embedding)::

    config = RelayConfig(listen=HostPort("127.0.0.1", 0), store=StoreSpec("memory"))
    async with running_server(config) as relay:
        async with grpc.aio.insecure_channel(relay.target) as channel:
            ...
        report = await relay.drain()   # optional: what SIGTERM does

Leaving the block stops the server at once (jobs still running are cancelled
and answered UNAVAILABLE); ``relay serve`` drains with the grace period instead.

Starting opens the idempotency store first (a store that cannot be used is a
:class:`relay.errors.StoreError`), then reads the TLS files if any
(:class:`relay.errors.TlsError`), then binds (:class:`relay.errors.ListenError`).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from opentelemetry import metrics, trace

from bunnyrelay.settings import HostPort
from bunnyrelay.v1 import jobs_pb2
from relay.admission import Admission
from relay.checks import RequestChecks, parse_batch, parse_request
from relay.config import RelayConfig
from relay.decoding import register_forgiving
from relay.gauges import RelayGauges
from relay.kinds.registry import Registry
from relay.lifecycle import DrainReport, Lifecycle, Phase
from relay.reflection import Reflection
from relay.runner import JobRunner
from relay.service import JobService
from relay.stores.base import IdempotencyStore
from relay.stores.spec import build_store
from relay.stores.timing import timed
from relay.tls import ServerCertificates
from relay.tracing import RelayTelemetry

JOB_SERVICE = jobs_pb2.DESCRIPTOR.services_by_name["JobService"].full_name
HEALTH_SERVICE = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name


KEEPALIVE_OPTIONS: tuple[tuple[str, int], ...] = (
    # Clients across NAT and VPN gateways ping to keep their connection known and to see
    # it die (bunny every 30 s by default, bunny.relaypool.Keepalive). gRPC's default
    # answers a client that pings more often than every 5 minutes without data with
    # GOAWAY "too_many_pings", failing its calls: accept two a second, calls or not.
    ("grpc.http2.min_ping_interval_without_data_ms", 500),
    ("grpc.keepalive_permit_without_calls", 1),
    # And relay pings its clients: one that vanished with the tunnel gives back its
    # streams' window within about 80 s, not at TCP's timeout hours later.
    ("grpc.keepalive_time_ms", 60_000),
    ("grpc.keepalive_timeout_ms", 20_000),
)


class Relay:
    """One relay: its job service, the gRPC server around it and its lifecycle."""

    def __init__(
        self,
        config: RelayConfig,
        *,
        kinds: Registry | None = None,
        store: IdempotencyStore | None = None,
        tracer_provider: trace.TracerProvider | None = None,
        meter_provider: metrics.MeterProvider | None = None,
        logger: logging.Logger | None = None,
    ) -> None:
        self.config = config
        self.log = logger or logging.getLogger("relay")
        # "is None", not "or": an empty registry or store is falsy (it has a length).
        handlers = (Registry.builtin() if kinds is None else kinds).handlers()
        self.store = (
            store
            if store is not None
            else build_store(
                config.store,
                state_dir=config.state_dir,
                capacity=config.dedupe_capacity,
                retention_s=config.dedupe_retention * 3600,
                instance=config.instance_name,
                logger=self.log,
            )
        )
        self.certificates: ServerCertificates | None = None
        if config.tls_cert is not None and config.tls_key is not None:
            self.certificates = ServerCertificates(
                config.tls_cert, config.tls_key, config.tls_client_ca, logger=self.log
            )
        meter = metrics.get_meter("relay", meter_provider=meter_provider)
        admission = Admission(config.max_in_flight)
        self.runner = JobRunner(
            checks=RequestChecks(handlers, config.max_payload_bytes),
            store=timed(self.store, meter),
            admission=admission,
            instance=config.instance_name,
            logger=self.log,
            log_executions=config.log_executions,
        )
        telemetry = RelayTelemetry(
            instance=config.instance_name,
            kinds=handlers,
            tracer_provider=tracer_provider,
            meter_provider=meter_provider,
        )
        self.service = JobService(
            self.runner,
            run_one=telemetry.job(self.runner.execute_call),
            run_streamed=telemetry.streamed_job("RunStream", self.runner.execute),
            run_batched=telemetry.streamed_job("RunBatches", self.runner.execute),
            logger=self.log,
        )
        self._telemetry = telemetry
        self._gauges = RelayGauges(
            meter, admission, lambda: self.phase is Phase.READY, instance=config.instance_name
        )
        self.health = health.aio.HealthServicer()
        self.port = 0
        self._server: grpc.aio.Server | None = None
        self._lifecycle: Lifecycle | None = None

    @property
    def address(self) -> HostPort:
        """Where the server listens, with the port it was given."""
        return HostPort(self.config.listen.host, self.port)

    @property
    def target(self) -> str:
        """A channel target for this relay (the unspecified address becomes loopback)."""
        host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(self.config.listen.host)
        return str(HostPort(host or self.config.listen.host, self.port))

    @property
    def health_address(self) -> HostPort | None:
        """Where the plaintext health-only server listens, with its port; None without one."""
        listen = self.config.health_listen
        if listen is None or self._lifecycle is None or self._lifecycle.health_port is None:
            return None
        return HostPort(listen.host, self._lifecycle.health_port)

    @property
    def phase(self) -> Phase:
        return self._lifecycle.phase if self._lifecycle else Phase.NEW

    @property
    def in_flight(self) -> int:
        return self.service.in_flight

    @property
    def server(self) -> grpc.aio.Server:
        if self._server is None:
            raise RuntimeError("the relay has not been started")
        return self._server

    def _build_server(self) -> grpc.aio.Server:
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", self.config.max_receive_message_bytes),
                # Without this a second relay on the same port would share it silently.
                ("grpc.so_reuseport", 0),
                *KEEPALIVE_OPTIONS,
            ]
        )
        # The servicer's methods are wrapped once here (not by an interceptor, which
        # runs per call) so telemetry costs nothing to set up on the hot path.
        telemetry = self._telemetry
        handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {
            "Run": grpc.unary_unary_rpc_method_handler(
                telemetry.unary("Run", self.service.Run),
                request_deserializer=parse_request,
                response_serializer=jobs_pb2.JobResult.SerializeToString,
            ),
            "RunStream": grpc.stream_stream_rpc_method_handler(
                telemetry.stream("RunStream", self.service.RunStream),
                request_deserializer=parse_request,
                response_serializer=jobs_pb2.JobResult.SerializeToString,
            ),
            "RunBatches": grpc.stream_stream_rpc_method_handler(
                telemetry.stream("RunBatches", self.service.RunBatches),
                request_deserializer=parse_batch,
                response_serializer=jobs_pb2.ResultBatch.SerializeToString,
            ),
        }
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(JOB_SERVICE, handlers),)
        )
        server.add_registered_method_handlers(JOB_SERVICE, handlers)
        register_forgiving(
            server, lambda target: health_pb2_grpc.add_HealthServicer_to_server(self.health, target)
        )
        # Through register_forgiving, so that requests which do not decode get
        # INVALID_ARGUMENT here too, not UNKNOWN.
        register_forgiving(server, Reflection((JOB_SERVICE, HEALTH_SERVICE)).register)
        return server

    def _build_health_server(self) -> grpc.aio.Server:
        # Health requests are tiny: nothing larger is worth reading on a port with no TLS.
        server = grpc.aio.server(
            options=[("grpc.max_receive_message_length", 4096), ("grpc.so_reuseport", 0)]
        )
        register_forgiving(
            server, lambda target: health_pb2_grpc.add_HealthServicer_to_server(self.health, target)
        )
        return server

    async def start(self) -> int:
        """Open the store, bind and serve; returns the port.

        Raises :class:`relay.errors.StoreError`, :class:`relay.errors.TlsError` or
        :class:`relay.errors.ListenError`, with nothing left open.
        """
        await self.store.open()
        try:
            credentials = self.certificates.credentials() if self.certificates else None
        except BaseException:
            await self.store.close()
            raise
        self._server = self._build_server()
        self._lifecycle = Lifecycle(
            server=self._server,
            health_servicer=self.health,
            service=self.service,
            service_names=(JOB_SERVICE,),
            logger=self.log,
            health_server=self._build_health_server() if self.config.health_listen else None,
        )
        try:
            self.port = await self._lifecycle.start(
                self.config.listen, credentials, health_listen=self.config.health_listen
            )
        except BaseException:
            await self.store.close()
            raise
        return self.port

    async def drain(self, grace: float | None = None) -> DrainReport:
        """What SIGTERM does; ``grace`` defaults to the configured grace period."""
        if self._lifecycle is None:
            raise RuntimeError("the relay has not been started")
        return await self._lifecycle.drain(self.config.grace_period if grace is None else grace)

    def hurry(self) -> None:
        """Cut a running drain's grace period short."""
        if self._lifecycle is not None:
            self._lifecycle.hurry()

    async def stop(self) -> None:
        """Stop now: drain with no grace period (idempotent), then close the store."""
        if self._lifecycle is not None and self._lifecycle.phase is not Phase.STOPPED:
            await self.drain(grace=0)
        await self.store.close()


@asynccontextmanager
async def running_server(
    config: RelayConfig,
    *,
    kinds: Registry | None = None,
    store: IdempotencyStore | None = None,
    tracer_provider: trace.TracerProvider | None = None,
    meter_provider: metrics.MeterProvider | None = None,
    logger: logging.Logger | None = None,
) -> AsyncIterator[Relay]:
    """A started relay for the block's duration, stopped on the way out."""
    relay = Relay(
        config,
        kinds=kinds,
        store=store,
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
        logger=logger,
    )
    await relay.start()
    try:
        yield relay
    finally:
        await relay.stop()
