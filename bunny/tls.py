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

from bunny.dns.textfile import running_as
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


# What each flag takes, for messages that say what to give it instead.
_WANTED = {
    "--tls-ca": "the PEM CA bundle that signed relay's certificate",
    "--tls-cert": "bunny's PEM client certificate chain",
    "--tls-key": "the PEM private key of --tls-cert",
}


class _EncryptedKeyError(Exception):
    """OpenSSL asked for a pass phrase: it would prompt on the terminal without this."""


def _no_pass_phrase() -> bytes:
    raise _EncryptedKeyError


def load_credentials(files: TlsFiles) -> grpc.ChannelCredentials:
    """Read and check the files; raises SettingError naming the file, what is wrong with it
    and what to give instead."""
    roots = None
    if files.ca is not None:
        roots = _read(files.ca, "--tls-ca")
        _check_certificates(files.ca, "--tls-ca", roots)
    chain = key = None
    if files.cert is not None and files.key is not None:
        chain = _read(files.cert, "--tls-cert")
        key = _read(files.key, "--tls-key")
        _check_certificates(files.cert, "--tls-cert", chain)
        _check_key_pair(files.cert, files.key, key)
        if chain != _read(files.cert, "--tls-cert") or key != _read(files.key, "--tls-key"):
            raise SettingError(f"{files.cert} or {files.key} changed while being read")
    return grpc.ssl_channel_credentials(
        root_certificates=roots, private_key=key, certificate_chain=chain
    )


def _env(flag: str) -> str:
    return "BUNNY_" + flag.lstrip("-").upper().replace("-", "_")


def _read(path: Path, flag: str) -> bytes:
    give = f"{flag} ({_env(flag)}) takes {_WANTED[flag]}"
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise SettingError(f"{flag} {path}: no such file; {give}") from None
    except IsADirectoryError:
        raise SettingError(
            f"{flag} {path} is a directory{_holding(path)}; {give}, a file"
        ) from None
    except PermissionError:
        raise SettingError(
            f"{flag} {path}: permission denied for {running_as()}; make the file readable "
            "by that user (in Kubernetes: the secret volume's defaultMode, or the pod's fsGroup)"
        ) from None
    except OSError as exc:
        raise SettingError(
            f"{flag} {path}: cannot be read: {exc.strerror or exc}; {give}"
        ) from None


def _holding(directory: Path) -> str:
    """What a directory given for a file holds: a mounted secret's files are the usual answer."""
    try:
        names = sorted(entry.name for entry in os.scandir(directory) if entry.is_file())
    except OSError:
        return ""
    if not names:
        return ""
    shown = ", ".join(names[:4]) + (", …" if len(names) > 4 else "")
    return f" (it holds {shown})"


def _check_certificates(path: Path, flag: str, data: bytes) -> None:
    # OpenSSL's own parser, as gRPC's will be: a file it takes here, gRPC takes.
    try:
        ssl.create_default_context(cadata=data.decode("ascii"))
    except (ssl.SSLError, UnicodeDecodeError, ValueError) as exc:
        found = (
            "no -----BEGIN CERTIFICATE----- block" if b"-----BEGIN CERTIFICATE" not in data else exc
        )
        raise SettingError(
            f"{flag} {path} is not a PEM certificate file ({found}); "
            f"{flag} ({_env(flag)}) takes {_WANTED[flag]}"
        ) from None


def _check_key_pair(cert: Path, key: Path, key_data: bytes) -> None:
    give = f"--tls-key ({_env('--tls-key')}) takes {_WANTED['--tls-key']}"
    if b"PRIVATE KEY-----" not in key_data:
        raise SettingError(
            f"--tls-key {key} is not a PEM private key (no -----BEGIN ... PRIVATE KEY----- "
            f"block); {give}"
        )
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_cert_chain(cert, key, password=_no_pass_phrase)
    except _EncryptedKeyError:
        raise SettingError(
            f"--tls-key {key} is encrypted with a pass phrase; bunny needs it unencrypted "
            "(openssl pkey -in KEY -out KEY.plain)"
        ) from None
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            raise SettingError(
                f"--tls-key {key} is not the private key of --tls-cert {cert}; give the key "
                "the certificate was issued with (in a Kubernetes TLS secret: tls.key beside "
                "tls.crt)"
            ) from None
        raise SettingError(
            f"--tls-key {key} is not a usable PEM private key ({exc}); {give}"
        ) from None
    except OSError as exc:
        raise SettingError(f"{cert} or {key}: {exc.strerror or exc}") from None


class ClientTls:
    """The current channel credentials, and a generation that moves when the files change."""

    def __init__(self, files: TlsFiles, *, check_interval: float = CHECK_INTERVAL_S) -> None:
        self.files = files
        self._check_interval = check_interval
        self.credentials = load_credentials(files)
        try:
            self._seen = _identity(files.paths)
        except OSError:
            self._seen = ()  # replaced since it was read: the next refresh reads it again
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
