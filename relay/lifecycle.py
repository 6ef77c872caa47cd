"""relay's life: start, ready, drain, stop. Signals are handled here and nowhere else.

- **start**: bind the port (a port in use is a :class:`ListenError`), start
  the gRPC server with health NOT_SERVING; the health-only server too, when
  there is one (``--health-listen``: plaintext, for the kubelet's probes).
- **ready**: health SERVING for ``""`` and the JobService.
- **drain** (SIGTERM, SIGINT, or :meth:`Lifecycle.drain`): health goes
  NOT_SERVING at once, so load balancers and probes move away, while the server
  still answers: new jobs are refused with UNAVAILABLE "draining" (bunny
  retries them elsewhere), streams answer new jobs DRAINING and end once
  their jobs are answered. Jobs in flight get the grace period to finish;
  those still running then are cancelled, logged, and their callers get
  UNAVAILABLE (``INTERRUPTED``) rather than silence.
- **stop**: the gRPC server stops (open calls get a moment to send their
  last message), then the health-only server, which answers NOT_SERVING until
  then because it shares the health servicer; the caller flushes telemetry.

A second signal during the drain cuts the grace period short.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2

from bunnyrelay.settings import HostPort
from relay.errors import ListenError
from relay.listening import try_bind
from relay.service import JobService

STOP_GRACE = 1.0
"""Seconds that calls still open after the drain get to finish writing before the server stops."""

INTERRUPT_WAIT = 2.0
"""Seconds that cancelled jobs get to unwind and answer their callers."""

_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class Phase(enum.Enum):
    NEW = "new"
    STARTING = "starting"
    READY = "ready"
    DRAINING = "draining"
    STOPPED = "stopped"


@dataclass(frozen=True, slots=True)
class DrainReport:
    in_flight_at_start: int
    """Jobs running when the drain began."""
    interrupted: tuple[str, ...]
    """Ids of the jobs cancelled because they outlasted the grace period."""
    seconds: float
    """From the start of the drain until the server stopped."""


class Lifecycle:
    """Moves one relay through its phases; owns the gRPC server's start and stop."""

    def __init__(
        self,
        *,
        server: grpc.aio.Server,
        health_servicer: health.aio.HealthServicer,
        service: JobService,
        service_names: tuple[str, ...],
        logger: logging.Logger,
        health_server: grpc.aio.Server | None = None,
    ) -> None:
        self._server = server
        self._health_server = health_server
        self.health_port: int | None = None
        """The health-only server's bound port, once started."""
        self._health = health_servicer
        self._service = service
        self._service_names = service_names
        self._log = logger
        self.phase = Phase.NEW
        self._hurry = asyncio.Event()
        self._drained: asyncio.Future[DrainReport] | None = None

    async def start(
        self,
        listen: HostPort,
        credentials: grpc.ServerCredentials | None = None,
        *,
        health_listen: HostPort | None = None,
    ) -> int:
        """Bind (TLS only when ``credentials`` are given), start and become ready;
        returns the bound port. ``health_listen`` is where the health-only server
        binds, always in plaintext."""
        if self.phase is not Phase.NEW:
            raise RuntimeError(f"relay cannot start from phase {self.phase.value}")
        if (health_listen is None) != (self._health_server is None):
            raise ValueError("health_listen and the health-only server go together")
        self.phase = Phase.STARTING
        # Before either server answers: a fresh HealthServicer says SERVING for "".
        for name in ("", *self._service_names):
            await self._health.set(name, _NOT_SERVING)
        if self._health_server is not None and health_listen is not None:
            # First, and started at once: a server that bound a port but never started
            # keeps it until the process ends, and this one may answer early (NOT_SERVING).
            await self._try_bind(health_listen)
            self.health_port = self._bind(self._health_server, health_listen, None)
            await self._health_server.start()
        try:
            await self._try_bind(listen)
            port = self._bind(self._server, listen, credentials)
        except ListenError:
            if self._health_server is not None:
                await self._health_server.stop(None)
            raise
        await self._server.start()
        for name in ("", *self._service_names):
            await self._health.set(name, _SERVING)
        self.phase = Phase.READY
        return port

    async def _try_bind(self, listen: HostPort) -> None:
        try:
            await try_bind(listen)
        except ListenError:
            self.phase = Phase.STOPPED
            raise

    def _bind(
        self, server: grpc.aio.Server, listen: HostPort, credentials: grpc.ServerCredentials | None
    ) -> int:
        try:
            if credentials is None:
                return int(server.add_insecure_port(str(listen)))
            return int(server.add_secure_port(str(listen), credentials))
        except RuntimeError as exc:
            self.phase = Phase.STOPPED
            raise ListenError(
                f"cannot listen on {listen}: the address is in use or not available here"
            ) from exc

    def hurry(self) -> None:
        """End the grace period now: cancel what is still running."""
        self._hurry.set()

    async def drain(self, grace: float) -> DrainReport:
        """Drain and stop; a second call waits for the first drain's report."""
        if self._drained is not None:
            return await asyncio.shield(self._drained)
        self._drained = asyncio.get_running_loop().create_future()
        try:
            report = await self._drain(grace)
        except BaseException as exc:
            self._drained.set_exception(exc)
            # Retrieved here so that a drain nobody else awaits does not warn.
            self._drained.exception()
            raise
        self._drained.set_result(report)
        return report

    async def _drain(self, grace: float) -> DrainReport:
        began = time.monotonic()
        was_serving = self.phase is Phase.READY
        self.phase = Phase.DRAINING
        # NOT_SERVING first: probes and balancers must look away before work is refused.
        await self._health.enter_graceful_shutdown()
        in_flight = self._service.in_flight
        self._service.begin_drain()
        if was_serving:
            self._log.info(
                "drain begun: %d jobs in flight, grace period %.1f s",
                in_flight,
                grace,
                extra={"event": "relay.drain.begin", "in_flight": in_flight},
            )
        interrupted: tuple[str, ...] = ()
        if not await self._wait_idle(grace):
            interrupted = tuple(self._service.interrupt())
            self._log.warning(
                "grace period over: cancelled %d jobs still running; their callers get "
                "UNAVAILABLE (INTERRUPTED): %s",
                len(interrupted),
                ", ".join(interrupted),
                extra={"event": "relay.drain.interrupted", "job_ids": list(interrupted)},
            )
            if not await self._wait_idle(INTERRUPT_WAIT):
                self._log.error(
                    "jobs ignored cancellation and are abandoned: %s",
                    ", ".join(self._service.runner.running_job_ids()),
                    extra={"event": "relay.drain.abandoned"},
                )
        await self._server.stop(STOP_GRACE)
        if self._health_server is not None:
            await self._health_server.stop(None)
        self.phase = Phase.STOPPED
        report = DrainReport(in_flight, interrupted, time.monotonic() - began)
        if was_serving:
            self._log.info(
                "drain finished in %.2f s: %d jobs completed, %d interrupted",
                report.seconds,
                in_flight - len(interrupted),
                len(interrupted),
                extra={"event": "relay.drain.end"},
            )
        return report

    async def _wait_idle(self, seconds: float) -> bool:
        """Wait until no job runs, for at most ``seconds`` or until :meth:`hurry`."""
        idle = asyncio.ensure_future(self._service.wait_idle())
        hurry = asyncio.ensure_future(self._hurry.wait())
        try:
            async with asyncio.timeout(seconds):
                await asyncio.wait({idle, hurry}, return_when=asyncio.FIRST_COMPLETED)
        except TimeoutError:
            pass
        finally:
            idle.cancel()
            hurry.cancel()
        return self._service.in_flight == 0


async def serve_until_signalled(
    start: Callable[[], Awaitable[None]],
    drain: Callable[[], Awaitable[DrainReport]],
    hurry: Callable[[], None],
    logger: logging.Logger,
) -> DrainReport:
    """Start, wait for SIGTERM or SIGINT, drain. A second signal calls ``hurry``."""
    loop = asyncio.get_running_loop()
    received: asyncio.Future[signal.Signals] = loop.create_future()

    def on_signal(signum: signal.Signals) -> None:
        if not received.done():
            received.set_result(signum)
            return
        logger.warning(
            "%s during the drain: cancelling the jobs still running",
            signum.name,
            extra={"event": "relay.drain.hurry"},
        )
        hurry()

    stop_signals = (signal.SIGTERM, signal.SIGINT)
    for signum in stop_signals:
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        await start()
        signum = await received
        logger.info("%s received", signum.name, extra={"event": "relay.signal"})
        return await drain()
    finally:
        for signum in stop_signals:
            loop.remove_signal_handler(signum)
