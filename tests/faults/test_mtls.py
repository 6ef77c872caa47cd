"""Mutual TLS between bunny and relay: who gets in, who does not, and rotation under load.

Certificates are made in the test run (trustme, expired ones included); no key
is committed. bunny dials 127.0.0.1 and verifies relay's certificate against
the DNS name it resolved from a real DNS server.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import logging
import ssl
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import trustme

from bunny.dns.resolver import Resolver
from bunny.dns.settings import ResolverSettings
from bunny.dns.tracing import DnsTelemetry
from bunny.outcome import JobOutcome
from bunny.relaypool import RelayPool
from bunny.retry import RetryPolicy
from bunny.submitter import SubmitSettings, UnarySubmitter
from bunny.tls import ClientTls, TlsFiles
from bunny.tls import log as bunny_log
from bunnyrelay.v1 import jobs_pb2
from lab.dnsserver import ZoneServer
from lab.processes import relay_process, run_bunny
from tests.conftest import RELAY_NAME
from tests.relay.harness import CountingKinds, async_stub, job, local_relay, wait_until

YESTERDAY = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=1)
LAST_WEEK = YESTERDAY - datetime.timedelta(days=6)


@dataclass
class Pki:
    """CAs and certificates for one test, written to ``directory`` as PEM files."""

    directory: Path
    server_ca: trustme.CA
    client_ca: trustme.CA
    rogue_ca: trustme.CA

    def write(self, name: str, blob: trustme.Blob) -> Path:
        path = self.directory / name
        blob.write_to_path(str(path))
        return path

    def leaf(self, name: str, cert: trustme.LeafCert) -> tuple[Path, Path]:
        """Write ``cert`` as NAME.crt (its chain) and NAME.key."""
        chain = self.directory / f"{name}.crt"
        chain.write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
        return chain, self.write(f"{name}.key", cert.private_key_pem)

    @property
    def server_ca_file(self) -> Path:
        return self.write("server-ca.pem", self.server_ca.cert_pem)

    @property
    def client_ca_file(self) -> Path:
        return self.write("client-ca.pem", self.client_ca.cert_pem)

    def relay_files(self, cert: trustme.LeafCert | None = None) -> dict[str, Any]:
        chain, key = self.leaf("relay", cert or self.server_ca.issue_cert(RELAY_NAME))
        return {"tls_cert": chain, "tls_key": key, "tls_client_ca": self.client_ca_file}

    def bunny_files(self, cert: trustme.LeafCert | None = None) -> TlsFiles:
        chain, key = self.leaf("bunny", cert or self.client_ca.issue_cert("bunny"))
        return TlsFiles(ca=self.server_ca_file, cert=chain, key=key)


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    directory = tmp_path / "pki"
    directory.mkdir()
    return Pki(directory, trustme.CA(), trustme.CA(), trustme.CA())


@pytest.fixture
async def named_zone() -> AsyncIterator[ZoneServer]:
    async with ZoneServer(
        zone="private.aws.internal", records={RELAY_NAME: {"A": ["127.0.0.1"]}}
    ) as server:
        yield server


@dataclass
class Bunny:
    """bunny's runner in this process, resolving relay's name through the zone."""

    pool: RelayPool
    runner: UnarySubmitter

    async def run(self, kind: str = "echo", payload: bytes = b"hi") -> JobOutcome:
        request = jobs_pb2.JobRequest(job_id=str(uuid.uuid4()), kind=kind, payload=payload)
        return await self.runner.run(request)


@asynccontextmanager
async def bunny(
    zone: ZoneServer,
    port: int,
    files: TlsFiles,
    *,
    attempts: int = 2,
    check_interval: float = 1.0,
) -> AsyncIterator[Bunny]:
    resolver = DnsTelemetry().wrap(
        Resolver(ResolverSettings(nameservers=(zone.address,), family="ipv4"))
    )
    pool = RelayPool(
        resolver, RELAY_NAME, port, tls=ClientTls(files, check_interval=check_interval)
    )
    runner = UnarySubmitter(
        pool, SubmitSettings(timeout_s=10.0, retry=RetryPolicy(attempts=attempts))
    )
    try:
        yield Bunny(pool, runner)
    finally:
        await runner.close()
        await pool.close(grace=0)
        await resolver.close()


# --- who gets in --------------------------------------------------------------------------


async def test_mutual_tls_end_to_end_with_the_real_commands(pki: Pki, zone: ZoneServer) -> None:
    relay_files = pki.relay_files()
    bunny_files = pki.bunny_files()
    args = [f"--{key.replace('_', '-')}={path}" for key, path in relay_files.items()]
    async with relay_process("127.0.0.1:0", args=args) as relay:
        zone.set_records(RELAY_NAME, "A", ["127.0.0.1"])
        for mode in ([], ["--stream"]):
            code, out, err = await run_bunny(
                "submit",
                *("--target", f"{RELAY_NAME}:{relay.port}", "--nameserver", str(zone.address)),
                *("--tls-ca", str(bunny_files.ca), "--tls-cert", str(bunny_files.cert)),
                *("--tls-key", str(bunny_files.key), "--payload", "over tls", "--json"),
                *mode,
            )
            assert code == 0, err
            (line,) = [json.loads(text) for text in out.splitlines() if text.strip()]
            assert line["output"] == "over tls"
            assert line["relay_address"] == f"127.0.0.1:{relay.port}"

        # The same bunny without its client certificate is turned away.
        code, out, err = await run_bunny(
            "submit",
            *("--target", f"{RELAY_NAME}:{relay.port}", "--nameserver", str(zone.address)),
            *("--tls-ca", str(bunny_files.ca), "--json", "--attempts", "1"),
        )
        assert code == 1
        assert json.loads(out)["error"]["type"] == "RelayUnavailable"


@pytest.mark.parametrize(
    "case",
    ["no-client-cert", "client-cert-from-another-ca", "expired-client-cert"],
)
async def test_relay_turns_away_clients_without_a_valid_certificate(
    pki: Pki, named_zone: ZoneServer, case: str
) -> None:
    counting = CountingKinds()
    if case == "no-client-cert":
        files = TlsFiles(ca=pki.server_ca_file)
    elif case == "client-cert-from-another-ca":
        files = pki.bunny_files(pki.rogue_ca.issue_cert("bunny"))
    else:
        files = pki.bunny_files(
            pki.client_ca.issue_cert("bunny", not_before=LAST_WEEK, not_after=YESTERDAY)
        )
    async with (
        local_relay(kinds=counting.kinds, **pki.relay_files()) as local,
        bunny(named_zone, local.relay.port, files) as client,
    ):
        outcome = await client.run("count")

    assert outcome.status == "FAILED"
    assert outcome.error is not None
    assert outcome.error.type == "RelayUnavailable"
    assert counting.runs == [], "the job must not reach relay"


@pytest.mark.parametrize("case", ["wrong-name", "another-ca", "expired"])
async def test_bunny_turns_away_a_relay_whose_certificate_fails_its_checks(
    pki: Pki, named_zone: ZoneServer, case: str
) -> None:
    counting = CountingKinds()
    ca = pki.rogue_ca if case == "another-ca" else pki.server_ca
    name = "relay.elsewhere.example" if case == "wrong-name" else RELAY_NAME
    dates: dict[str, Any] = (
        {"not_before": LAST_WEEK, "not_after": YESTERDAY} if case == "expired" else {}
    )
    async with (
        local_relay(kinds=counting.kinds, **pki.relay_files(ca.issue_cert(name, **dates))) as local,
        bunny(named_zone, local.relay.port, pki.bunny_files()) as client,
    ):
        outcome = await client.run("count")

    assert outcome.status == "FAILED"
    assert outcome.error is not None
    assert outcome.error.type == "RelayTlsFailed", outcome.error.message
    assert counting.runs == []


async def test_a_plaintext_client_gets_nothing_from_a_tls_relay(pki: Pki) -> None:
    counting = CountingKinds()
    async with (
        local_relay(kinds=counting.kinds, **pki.relay_files()) as local,
        grpc.aio.insecure_channel(local.relay.target) as plaintext,
    ):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await async_stub(plaintext).Run(job("plain", "count"), timeout=5)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    assert counting.runs == []


async def test_bad_tls_files_stop_relay_and_bunny_with_a_clear_error(
    pki: Pki, tmp_path: Path
) -> None:
    relay_files = pki.relay_files()
    other_key = pki.leaf("other", pki.server_ca.issue_cert(RELAY_NAME))[1]
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "relay", "serve", "--listen", "127.0.0.1:0", "--store", "memory"),
        *("--tls-cert", str(relay_files["tls_cert"]), "--tls-key", str(other_key)),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode == 1
    assert "private key" in err.decode()
    assert "Traceback" not in err.decode()

    code, _, err_text = await run_bunny(
        "submit",
        *("--target", "127.0.0.1:1", "--tls-ca", str(tmp_path / "missing.pem")),
    )
    assert code == 2
    assert "missing.pem" in err_text


# --- rotation -----------------------------------------------------------------------------


async def _served_certificate(port: int, files: TlsFiles) -> bytes:
    """The certificate relay presents to a new connection (DER)."""
    context = ssl.create_default_context(cafile=files.ca)
    assert files.cert is not None
    assert files.key is not None
    context.load_cert_chain(files.cert, files.key)
    context.set_alpn_protocols(["h2"])
    _, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=context, server_hostname=RELAY_NAME
    )
    try:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        return bytes(der)
    finally:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()


async def _accepts(port: int, files: TlsFiles) -> bool:
    """Whether relay keeps a new connection that presents ``files``' client certificate:
    it sends its HTTP/2 settings to one it accepts and closes one it does not."""
    context = ssl.create_default_context(cafile=files.ca)
    assert files.cert is not None
    assert files.key is not None
    context.load_cert_chain(files.cert, files.key)
    context.set_alpn_protocols(["h2"])
    try:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=context, server_hostname=RELAY_NAME
        )
    except (OSError, ssl.SSLError):
        return False
    try:
        writer.write(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes(9))  # preface, empty SETTINGS
        await writer.drain()
        return bool(await asyncio.wait_for(reader.read(9), timeout=5))
    except (OSError, ssl.SSLError):
        return False
    finally:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()


def _der(cert: trustme.LeafCert) -> bytes:
    return ssl.PEM_cert_to_DER_cert(cert.cert_chain_pems[0].bytes().decode())


async def _rotate_a_file_at_a_time(
    cert: tuple[Path, bytes], key: tuple[Path, bytes], halfway: Callable[[], Awaitable[None]]
) -> None:
    """Write the certificate, then the key, as a careless rotation would: ``halfway`` runs
    in between, while the certificate and the key on disk do not match."""
    cert[0].write_bytes(cert[1])
    await halfway()
    key[0].write_bytes(key[1])


async def _until(check: Callable[[], Awaitable[bool]], *, within: float = 10.0) -> None:
    """Poll ``check`` until it holds; fail the test after ``within`` seconds."""
    for _ in range(int(within / 0.05)):
        if await check():
            return
        await asyncio.sleep(0.05)
    assert await check(), f"still false after {within} s"


class _Events(logging.Handler):
    """The ``event`` of each warning a logger emits (from gRPC's threads too)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.seen: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.seen.append(getattr(record, "event", ""))


async def test_certificates_rotate_on_both_sides_under_load_without_a_failed_job(
    pki: Pki, named_zone: ZoneServer
) -> None:
    new_client_ca = trustme.CA()
    relay_files = pki.relay_files()
    bunny_files = pki.bunny_files()
    outcomes: list[JobOutcome] = []
    phases: list[int] = []
    stop = asyncio.Event()
    relay_log = logging.getLogger("tests.relay.rotation")

    async with (
        local_relay(**relay_files, max_in_flight=64, logger=relay_log) as local,
        bunny(named_zone, local.relay.port, bunny_files, attempts=1, check_interval=0.1) as client,
    ):
        port = local.relay.port

        async def load() -> None:
            while not stop.is_set():
                outcomes.append(await client.run())

        async def more_jobs(count: int = 100) -> None:
            """Let ``count`` more jobs finish: the load goes on through the step just taken."""
            done = len(outcomes) + count
            await wait_until(lambda: len(outcomes) >= done, within=30)

        relay_warned, bunny_warned = _Events(), _Events()
        relay_log.addHandler(relay_warned)
        bunny_log.addHandler(bunny_warned)
        workers = [asyncio.create_task(load()) for _ in range(4)]
        try:
            await more_jobs()
            phases.append(len(outcomes))

            # 1. relay's certificate and key, replaced one file at a time.
            old_relay = await _served_certificate(port, bunny_files)
            new_relay = pki.server_ca.issue_cert(RELAY_NAME)

            async def relay_keeps_its_pair() -> None:
                # This handshake has relay look at the files: it must keep its old pair.
                assert await _served_certificate(port, bunny_files) == old_relay
                await wait_until(lambda: "tls.reload_failed" in relay_warned.seen)

            await _rotate_a_file_at_a_time(
                (relay_files["tls_cert"], new_relay.cert_chain_pems[0].bytes()),
                (relay_files["tls_key"], new_relay.private_key_pem.bytes()),
                relay_keeps_its_pair,
            )

            async def serves_new() -> bool:
                return await _served_certificate(port, bunny_files) == _der(new_relay)

            await _until(serves_new)
            await more_jobs()
            phases.append(len(outcomes))

            # 2. A new client CA: relay trusts both, bunny moves to a certificate from the
            # new one (also written a file at a time), then relay drops the old CA.
            moved = new_client_ca.issue_cert("bunny")
            moved_cert, moved_key = pki.leaf("moved-bunny", moved)
            from_new_ca = TlsFiles(ca=bunny_files.ca, cert=moved_cert, key=moved_key)
            both = pki.client_ca.cert_pem.bytes() + new_client_ca.cert_pem.bytes()
            relay_files["tls_client_ca"].write_bytes(both)

            async def trusts_new_ca() -> bool:
                return await _accepts(port, from_new_ca)

            await _until(trusts_new_ca)
            generation = client.pool.tls.generation if client.pool.tls else 0
            assert bunny_files.cert is not None
            assert bunny_files.key is not None

            async def bunny_keeps_its_certificate() -> None:
                await wait_until(lambda: "tls.reload_failed" in bunny_warned.seen)
                assert client.pool.tls is not None
                assert client.pool.tls.generation == generation

            await _rotate_a_file_at_a_time(
                (bunny_files.cert, moved.cert_chain_pems[0].bytes()),
                (bunny_files.key, moved.private_key_pem.bytes()),
                bunny_keeps_its_certificate,
            )

            async def bunny_moved() -> bool:
                return client.pool.tls is not None and client.pool.tls.generation > generation

            await _until(bunny_moved)
            await more_jobs()
            phases.append(len(outcomes))
            relay_files["tls_client_ca"].write_bytes(new_client_ca.cert_pem.bytes())
            # This handshake has relay take the new bundle while the load goes on.
            assert await _accepts(port, bunny_files)
            await more_jobs()
            phases.append(len(outcomes))
        finally:
            stop.set()
            await asyncio.gather(*workers)
            relay_log.removeHandler(relay_warned)
            bunny_log.removeHandler(bunny_warned)

        old_cert, old_key = pki.leaf("old-bunny", pki.client_ca.issue_cert("bunny"))
        old_client = TlsFiles(ca=bunny_files.ca, cert=old_cert, key=old_key)
        assert not await _accepts(port, old_client), "relay still trusts the old client CA"
        assert await _accepts(port, bunny_files)

    failed = [o for o in outcomes if o.status != "SUCCEEDED"]
    counts = [b - a for a, b in zip([0, *phases], [*phases, len(outcomes)], strict=True)]
    print(
        f"\nrotation under load: {len(outcomes)} jobs, {len(failed)} failed; jobs per phase "
        f"(before, relay cert rotated, bunny cert rotated, old CA dropped, after): {counts}"
    )
    assert failed == []
    assert all(count > 0 for count in counts[:-1]), counts
