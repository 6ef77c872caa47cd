"""relay's TLS: its certificate, key and client CA, re-read from disk when they change.

With ``--tls-cert`` and ``--tls-key`` relay listens for TLS only: a plaintext
client's handshake fails and it gets UNAVAILABLE, nothing else. With
``--tls-client-ca`` too, a client must present a certificate that CA signed
(mutual TLS); one without, or from another CA, or expired, is turned away in
the handshake, before any call reaches relay.

Rotation without a restart: gRPC asks :meth:`ServerCertificates.fetch` for the
configuration at each new handshake (``grpc.dynamic_ssl_server_credentials``);
it looks at the files' identity (inode, size, mtime) and re-reads them only
when that changed. A new pair is taken only once the key matches the
certificate, so a rotation that writes the two files one after the other
never serves a mismatched pair: until both are in place the old pair goes on.
Connections already open keep their session; new ones get the new certificate.
cert-manager's Secret volumes swap all files at once, which is the easy case.
"""

from __future__ import annotations

import errno
import logging
import os
import ssl
import threading
from pathlib import Path
from typing import Any

import grpc

from relay.errors import TlsError

_Identity = tuple[tuple[int, int, int, int], ...]

_FLAGS = {
    "certificate": "--tls-cert",
    "private key": "--tls-key",
    "client CA bundle": "--tls-client-ca",
}


def _file_problem(exc: OSError) -> str:
    """What went wrong with a file, in words that point at the fix."""
    if exc.errno == errno.ENOENT:
        return "it does not exist"
    if exc.errno in (errno.EACCES, errno.EPERM):
        uid, gid = os.geteuid(), os.getegid()
        return (
            f"relay's user (uid {uid}, gid {gid}) may not read it; make it readable by that "
            f"user (in Kubernetes, the Secret volume's defaultMode and the pod's fsGroup: {gid})"
        )
    if exc.errno == errno.EISDIR:
        return "it is a directory, not a file"
    return exc.strerror or str(exc)


def _identity(paths: tuple[Path, ...]) -> _Identity:
    identity = []
    for path in paths:
        stat = os.stat(path)
        identity.append((stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns))
    return tuple(identity)


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise TlsError(
            f"cannot read the {what} {path} ({_FLAGS[what]}): {_file_problem(exc)}"
        ) from None


def _check_pem(data: bytes, path: Path, what: str, marker: bytes) -> None:
    if marker not in data:
        raise TlsError(
            f"the {what} {path} ({_FLAGS[what]}) is not PEM: it has no line with "
            f"{marker.decode()!r}"
        )


def check_pair(cert: Path, key: Path) -> None:
    """Raise :class:`TlsError` unless ``key`` is the private key of ``cert`` (both PEM)."""
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert, key)
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            raise TlsError(
                f"the private key {key} (--tls-key) does not belong to the certificate {cert} "
                "(--tls-cert): give the key the certificate was issued for"
            ) from None
        raise TlsError(
            f"{cert} (--tls-cert) and {key} (--tls-key) are not a PEM certificate chain and "
            f"its private key ({exc.reason})"
        ) from None
    except OSError as exc:
        raise TlsError(f"cannot read {cert} or {key}: {_file_problem(exc)}") from None


def check_ca(data: bytes, path: Path) -> None:
    """Raise :class:`TlsError` unless ``data`` holds at least one PEM certificate."""
    try:
        ssl.create_default_context(cadata=data.decode("ascii"))
    except (ssl.SSLError, UnicodeDecodeError, ValueError) as exc:
        raise TlsError(f"{path} (--tls-client-ca) is not a PEM CA bundle ({exc})") from None


class ServerCertificates:
    """The files behind relay's TLS, and gRPC's credentials that follow them."""

    def __init__(
        self, cert: Path, key: Path, client_ca: Path | None, *, logger: logging.Logger
    ) -> None:
        self.cert = cert
        self.key = key
        self.client_ca = client_ca
        self._paths = (cert, key) if client_ca is None else (cert, key, client_ca)
        self._log = logger
        self._lock = threading.Lock()
        self._seen: _Identity | None = None
        self.reloads = 0
        """Times a changed set of files was taken (for tests)."""

    def _load(self) -> grpc.ServerCertificateConfiguration:
        chain = _read(self.cert, "certificate")
        key = _read(self.key, "private key")
        _check_pem(chain, self.cert, "certificate", b"-----BEGIN CERTIFICATE-----")
        _check_pem(key, self.key, "private key", b"PRIVATE KEY-----")
        check_pair(self.cert, self.key)
        if chain != _read(self.cert, "certificate") or key != _read(self.key, "private key"):
            raise TlsError(f"{self.cert} or {self.key} changed while being read")
        roots = None
        if self.client_ca is not None:
            roots = _read(self.client_ca, "client CA bundle")
            check_ca(roots, self.client_ca)
        return grpc.ssl_server_certificate_configuration([(key, chain)], root_certificates=roots)

    def credentials(self) -> grpc.ServerCredentials:
        """Credentials for ``add_secure_port``; raises :class:`TlsError` if the files are bad."""
        try:
            identity = _identity(self._paths)
        except OSError as exc:
            path = Path(exc.filename)
            what = {self.cert: "certificate", self.key: "private key"}.get(path, "client CA bundle")
            raise TlsError(
                f"cannot read the {what} {path} ({_FLAGS[what]}): {_file_problem(exc)}"
            ) from None
        initial = self._load()
        self._seen = identity
        # The stubs say the fetcher must return a configuration; gRPC documents None as
        # "no change", which is what fetch returns most of the time.
        fetch: Any = self.fetch
        return grpc.dynamic_ssl_server_credentials(
            initial,
            fetch,
            require_client_authentication=self.client_ca is not None,
        )

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """Called by gRPC (in its own threads) before each handshake: a new configuration
        when the files changed and are usable, else None to keep the current one."""
        try:
            with self._lock:
                try:
                    identity = _identity(self._paths)
                except OSError:
                    return None  # a file is being replaced: keep serving the current pair
                if identity == self._seen:
                    return None
                try:
                    config = self._load()
                except TlsError as exc:
                    # Half-way through a rotation, most likely; the next change retries.
                    self._log.warning(
                        "TLS files changed but cannot be used yet, keeping the current ones: %s",
                        exc,
                        extra={"event": "tls.reload_failed"},
                    )
                    self._seen = identity
                    return None
                self._seen = identity
                self.reloads += 1
            self._log.info(
                "TLS certificate reloaded from %s",
                self.cert,
                extra={"event": "tls.reloaded", "cert": str(self.cert)},
            )
            return config
        except Exception:
            # An exception here would fail the client's handshake; never let one out.
            self._log.exception("reloading TLS files failed", extra={"event": "tls.reload_failed"})
            return None
