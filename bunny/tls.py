"""bunny's side of TLS: whom to trust, which certificate to show, re-read when the files change.

bunny dials relay's IP addresses but verifies relay's certificate against the
DNS name it resolved (:mod:`bunny.relaypool` sets ``grpc.ssl_target_name_override``
and the ``:authority`` to that name), so a certificate for
``relay.private.aws.internal`` is what it accepts, whatever address served it.

``--tls-ca`` is the CA bundle to trust (the system's roots without it);
``--tls-cert`` and ``--tls-key`` are bunny's client certificate for relay's
mutual TLS. Rotation: before each job bunny checks, at most once a second,
whether the files changed; when they did and the new set is usable (the key
matches the certificate), the pool's channels are rebuilt for new calls while
calls already running finish on the old ones. A set caught half-written is
skipped until the files change again.
"""

from __future__ import annotations

import logging
import os
import ssl
import time
from dataclasses import dataclass
from pathlib import Path

import grpc

from bunnyrelay.settings import SettingError

log = logging.getLogger("bunny.tls")

CHECK_INTERVAL_S = 1.0
"""How often, at most, bunny looks at the files' identity."""


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """What ``--tls-ca``, ``--tls-cert`` and ``--tls-key`` name."""

    ca: Path | None = None
    """PEM CA bundle to verify relay's certificate with; None: the system's roots."""
    cert: Path | None = None
    """PEM client certificate chain, for relay's mutual TLS."""
    key: Path | None = None
    """PEM private key of ``cert``."""

    def __post_init__(self) -> None:
        if (self.cert is None) != (self.key is None):
            raise SettingError("--tls-cert and --tls-key must be given together")

    @property
    def paths(self) -> tuple[Path, ...]:
        return tuple(path for path in (self.ca, self.cert, self.key) if path is not None)


def _identity(paths: tuple[Path, ...]) -> tuple[tuple[int, int, int, int], ...]:
    identity = []
    for path in paths:
        stat = os.stat(path)
        identity.append((stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns))
    return tuple(identity)


def load_credentials(files: TlsFiles) -> grpc.ChannelCredentials:
    """Read and check the files; raises SettingError saying which one is wrong and why."""
    roots = None
    if files.ca is not None:
        roots = _read(files.ca, "--tls-ca")
        try:
            ssl.create_default_context(cadata=roots.decode("ascii"))
        except (ssl.SSLError, UnicodeDecodeError, ValueError) as exc:
            raise SettingError(f"--tls-ca {files.ca}: not a PEM CA bundle ({exc})") from None
    chain = key = None
    if files.cert is not None and files.key is not None:
        chain = _read(files.cert, "--tls-cert")
        key = _read(files.key, "--tls-key")
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_cert_chain(files.cert, files.key)
        except (ssl.SSLError, OSError) as exc:
            raise SettingError(
                f"--tls-cert {files.cert} and --tls-key {files.key} are not a PEM certificate "
                f"chain and its private key ({exc})"
            ) from None
        if chain != _read(files.cert, "--tls-cert") or key != _read(files.key, "--tls-key"):
            raise SettingError(f"{files.cert} or {files.key} changed while being read")
    return grpc.ssl_channel_credentials(
        root_certificates=roots, private_key=key, certificate_chain=chain
    )


def _read(path: Path, flag: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise SettingError(f"{flag} {path}: {exc.strerror or exc}") from None


class ClientTls:
    """The current channel credentials, and a generation that moves when the files change."""

    def __init__(self, files: TlsFiles, *, check_interval: float = CHECK_INTERVAL_S) -> None:
        self.files = files
        self._check_interval = check_interval
        try:
            self._seen = _identity(files.paths)
        except OSError as exc:
            raise SettingError(f"{exc.filename}: {exc.strerror or exc}") from None
        self.credentials = load_credentials(files)
        self.generation = 0
        """Moves by one each time new credentials are taken."""
        self._next_check = time.monotonic() + check_interval

    def refresh(self) -> bool:
        """Take the files anew if they changed and are usable; True when they were taken."""
        now = time.monotonic()
        if now < self._next_check:
            return False
        self._next_check = now + self._check_interval
        try:
            identity = _identity(self.files.paths)
        except OSError:
            return False  # a file is being replaced: go on with what we have
        if identity == self._seen:
            return False
        self._seen = identity
        try:
            self.credentials = load_credentials(self.files)
        except SettingError as exc:
            log.warning(
                "TLS files changed but cannot be used yet, keeping the current ones: %s",
                exc,
                extra={"event": "tls.reload_failed"},
            )
            return False
        self.generation += 1
        log.info("TLS files reloaded", extra={"event": "tls.reloaded"})
        return True
