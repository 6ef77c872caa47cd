"""``--health-listen``: a plaintext port serving grpc.health.v1 and nothing else.

The kubelet's native gRPC probes cannot speak TLS, so a relay serving (mutual) TLS
gives them this port. It must say what the main port's health service says,
NOT_SERVING on drain included, and must not be a way around TLS to the jobs.
Certificates are made in the test run (trustme); no key is committed.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import trustme
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from bunnyrelay import healthcheck
from bunnyrelay.settings import HostPort, SettingError
from bunnyrelay.v1.jobs_pb2 import JobStatus
from relay.cli import build_parser, config_from
from relay.config import RelayConfig
from relay.errors import ListenError
from relay.lifecycle import Phase
from relay.server import JOB_SERVICE, Relay
from tests.conftest import RELAY_NAME
from tests.relay.harness import (
    async_stub,
    config,
    health_becomes,
    job,
    local_relay,
    logged,
    wait_until,
)

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
RELAY_COMMAND = Path(sys.executable).with_name("relay")
LOOPBACK_ANY_PORT = HostPort("127.0.0.1", 0)


@dataclass
class Pki:
    """relay's certificate and a client's, from two CAs, as PEM files."""

    server_ca: trustme.CA
    cert: Path
    key: Path
    client_ca: Path
    client: trustme.LeafCert

    def relay_files(self) -> dict[str, Any]:
        return {"tls_cert": self.cert, "tls_key": self.key, "tls_client_ca": self.client_ca}

    def channel(self, target: str) -> grpc.aio.Channel:
        """A mutual-TLS channel to relay, as bunny (which checks relay's DNS name)."""
        credentials = grpc.ssl_channel_credentials(
            root_certificates=self.server_ca.cert_pem.bytes(),
            private_key=self.client.private_key_pem.bytes(),
            certificate_chain=b"".join(blob.bytes() for blob in self.client.cert_chain_pems),
        )
        return grpc.aio.secure_channel(
            target, credentials, options=[("grpc.ssl_target_name_override", RELAY_NAME)]
        )


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    server_ca, client_ca = trustme.CA(), trustme.CA()
    leaf = server_ca.issue_cert(RELAY_NAME)
    cert, key, ca = tmp_path / "relay.crt", tmp_path / "relay.key", tmp_path / "clients-ca.pem"
    cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    leaf.private_key_pem.write_to_path(str(key))
    client_ca.cert_pem.write_to_path(str(ca))
    return Pki(server_ca, cert, key, ca, client_ca.issue_cert("bunny"))


async def _health(target: str, service: str = "") -> int:
    async with grpc.aio.insecure_channel(target) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=2
        )
    return int(reply.status)


async def _refused(target: str, service: str = "") -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _health(target, service)
    return caught.value


async def test_with_mutual_tls_the_health_port_answers_serving_in_plaintext(pki: Pki) -> None:
    async with local_relay(health_listen=LOOPBACK_ANY_PORT, **pki.relay_files()) as local:
        assert local.relay.health_address is not None
        health = str(local.relay.health_address)
        statuses = [await _health(health, name) for name in ("", JOB_SERVICE)]
        main_port_in_plaintext = await _refused(local.relay.target)

    assert statuses == [SERVING, SERVING]
    assert main_port_in_plaintext.code() == grpc.StatusCode.UNAVAILABLE


async def test_the_health_port_serves_no_jobs_and_no_reflection(pki: Pki) -> None:
    async with (
        local_relay(health_listen=LOOPBACK_ANY_PORT, **pki.relay_files()) as local,
        grpc.aio.insecure_channel(str(local.relay.health_address)) as channel,
    ):
        with pytest.raises(grpc.aio.AioRpcError) as run:
            await async_stub(channel).Run(job("around-tls", "echo"), timeout=2)
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=2
        )
        with pytest.raises(grpc.aio.AioRpcError) as listed:
            await reflection.read()

    assert run.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert listed.value.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_the_health_port_goes_not_serving_on_drain_and_closes_with_the_server(
    pki: Pki,
) -> None:
    async with (
        local_relay(health_listen=LOOPBACK_ANY_PORT, grace_period=5, **pki.relay_files()) as local,
        pki.channel(local.relay.target) as channel,
    ):
        health = str(local.relay.health_address)
        assert await _health(health) == SERVING
        running = async_stub(channel).Run(job("in-flight", "sleep", b"1000"), timeout=10)
        await wait_until(lambda: local.relay.in_flight == 1)
        draining = asyncio.create_task(local.relay.drain())
        await wait_until(lambda: local.relay.phase is Phase.DRAINING)
        statuses = [await _health(health, name) for name in ("", JOB_SERVICE)]
        result = await running
        await draining
        after_stop = await _refused(health)

    assert statuses == [NOT_SERVING, NOT_SERVING]
    assert result.status == JobStatus.JOB_STATUS_SUCCEEDED
    assert after_stop.code() == grpc.StatusCode.UNAVAILABLE


async def test_the_container_healthcheck_pointed_at_the_health_port_passes_with_tls_on(
    pki: Pki,
) -> None:
    """The image's and compose's health check stays plaintext: it is pointed at this port."""
    async with local_relay(health_listen=LOOPBACK_ANY_PORT, **pki.relay_files()) as local:
        health = str(local.relay.health_address)
        # The check blocks; this loop serves the relay it asks.
        passes = await asyncio.to_thread(healthcheck.main, [health])
        fails_on_tls_port = await asyncio.to_thread(
            healthcheck.main, [local.relay.target, "--timeout", "1"]
        )

    assert (passes, fails_on_tls_port) == (0, 1)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_a_port_in_use_fails_the_start_and_leaves_the_other_port_free() -> None:
    free = HostPort("127.0.0.1", _free_port())
    async with local_relay() as busy:
        taken = HostPort("127.0.0.1", busy.relay.port)
        for listen, health in ((free, taken), (taken, free)):
            relay = Relay(config(listen=listen, health_listen=health))
            with pytest.raises(ListenError, match=f"cannot listen on {taken}"):
                await relay.start()
            await relay.stop()
            assert relay.phase is Phase.STOPPED
            # What it had bound is released: another relay can take that port at once.
            again = Relay(config(listen=free))
            assert await again.start() == free.port
            await again.stop()


async def test_sigterm_turns_the_health_port_not_serving_while_jobs_drain(pki: Pki) -> None:
    """A real ``relay serve`` with mutual TLS: the kubelet's view through a real SIGTERM."""
    process = await asyncio.create_subprocess_exec(
        str(RELAY_COMMAND),
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--grace-period",
        "10",
        "--store",
        "memory",
        "--tls-cert",
        str(pki.cert),
        "--tls-key",
        str(pki.key),
        "--tls-client-ca",
        str(pki.client_ca),
        "--log-level",
        "DEBUG",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        # The health port comes from the environment, as the chart sets it.
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "RELAY_"))},
            "RELAY_HEALTH_LISTEN": "127.0.0.1:0",
        },
    )
    assert process.stdout is not None
    assert process.stderr is not None
    try:
        lines = [await asyncio.wait_for(process.stdout.readline(), timeout=20) for _ in range(2)]
        main = re.fullmatch(rb"relay listening on (127\.0\.0\.1:\d+)\n", lines[0])
        health = re.fullmatch(rb"relay health listening on (127\.0\.0\.1:\d+)\n", lines[1])
        assert main, lines
        assert health, lines
        health_target = health[1].decode()
        log: list[bytes] = []
        async with (
            pki.channel(main[1].decode()) as channel,
            grpc.aio.insecure_channel(health_target) as probe,
        ):
            stub = async_stub(channel)
            before = await _health(health_target)
            await stub.Run(job("warm-up", "echo"), timeout=5)  # connected, handshake done
            running = stub.Run(job("long", "sleep", b"1500"), timeout=15)
            await logged(process.stderr, "job.started", count=2, kept=log)  # "long" runs
            watched = asyncio.create_task(health_becomes(probe, "", NOT_SERVING))
            process.send_signal(signal.SIGTERM)
            await watched
            job_service = await _health(health_target, JOB_SERVICE)
            result = await running
        code = await asyncio.wait_for(process.wait(), timeout=15)
        after_exit = await _refused(health_target)
        stderr = b"".join([*log, await process.stderr.read()]).decode()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()

    assert before == SERVING
    assert job_service == NOT_SERVING
    assert result.status == JobStatus.JOB_STATUS_SUCCEEDED
    assert code == 0, stderr
    assert after_exit.code() == grpc.StatusCode.UNAVAILABLE
    assert "relay health (grpc.health.v1 only, plaintext) on 127.0.0.1:" in stderr


def test_the_flag_and_its_variable_set_the_health_address(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in list(os.environ):
        if name.startswith("RELAY_"):
            monkeypatch.delenv(name)
    assert config_from(build_parser().parse_args(["serve"])).health_listen is None
    monkeypatch.setenv("RELAY_HEALTH_LISTEN", "0.0.0.0:8086")
    from_env = config_from(build_parser().parse_args(["serve"]))
    from_flag = config_from(
        build_parser().parse_args(["serve", "--health-listen", "127.0.0.1:9000"])
    )
    assert from_env.health_listen == HostPort("0.0.0.0", 8086)
    assert from_flag.health_listen == HostPort("127.0.0.1", 9000)


@pytest.mark.parametrize(
    ("listen", "health"),
    [
        (HostPort("0.0.0.0", 50051), HostPort("0.0.0.0", 50051)),
        (HostPort("0.0.0.0", 50051), HostPort("127.0.0.1", 50051)),
        (HostPort("127.0.0.1", 50051), HostPort("::", 50051)),
    ],
)
def test_the_health_port_cannot_be_the_main_port(listen: HostPort, health: HostPort) -> None:
    with pytest.raises(SettingError, match=r"health_listen: .* overlaps --listen"):
        RelayConfig(listen=listen, health_listen=health)
    # Port 0 twice is two free ports, and other addresses may share a port number.
    RelayConfig(listen=HostPort("127.0.0.1", 0), health_listen=HostPort("127.0.0.1", 0))
    RelayConfig(listen=HostPort("127.0.0.1", 50051), health_listen=HostPort("127.0.0.2", 50051))
