"""relay's TLS files: every way they can be unusable is one clear message, and rotation is safe.

The command-line cases run relay as a user without privileges (tests/nonroot.py), since
root reads any file whatever its mode; each checks the message, exit 1 and no traceback.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from lab.processes import child_env, relay_process
from relay.errors import TlsError
from relay.tls import ServerCertificates
from tests.nonroot import as_nonroot, group_id, run, shared_dir, user_id

LOG = logging.getLogger("tests.tls")


class Files:
    """A certificate chain and its key from a CA made for the test, and a stranger's key."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        ca = trustme.CA()
        leaf = ca.issue_cert("relay.private.aws.internal")
        self.cert = self._write("relay.crt", b"".join(b.bytes() for b in leaf.cert_chain_pems))
        self.key = self._write("relay.key", leaf.private_key_pem.bytes())
        stranger = ca.issue_cert("someone-else")
        self.other_key = self._write("other.key", stranger.private_key_pem.bytes())
        self.ca = self._write("ca.pem", ca.cert_pem.bytes())

    def _write(self, name: str, data: bytes) -> Path:
        path = self.directory / name
        path.write_bytes(data)
        path.chmod(0o644)
        return path


@pytest.fixture
def files() -> Iterator[Files]:
    with shared_dir("relay-tls-") as directory:
        yield Files(directory)


# --- in process ---------------------------------------------------------------------------


def test_a_matching_pair_gives_credentials(files: Files) -> None:
    ServerCertificates(files.cert, files.key, files.ca, logger=LOG).credentials()


@pytest.mark.parametrize(
    ("broken", "message"),
    [
        ("missing-cert", r"cannot read the certificate .*relay\.crt \(--tls-cert\): it does not"),
        ("garbage-cert", r"the certificate .*relay\.crt \(--tls-cert\) is not PEM"),
        ("garbage-key", r"the private key .*relay\.key \(--tls-key\) is not PEM"),
        ("mismatch", r"the private key .*other\.key \(--tls-key\) does not belong to the cert"),
        ("garbage-ca", r"ca\.pem \(--tls-client-ca\) is not a PEM CA bundle"),
        ("directory", r"relay\.crt \(--tls-cert\): it is a directory, not a file"),
    ],
)
def test_each_unusable_file_is_named_with_its_flag(files: Files, broken: str, message: str) -> None:
    cert, key = files.cert, files.key
    if broken == "missing-cert":
        cert.unlink()
    elif broken == "garbage-cert":
        cert.write_bytes(b"not a certificate\n")
    elif broken == "garbage-key":
        key.write_bytes(os.urandom(64))
    elif broken == "mismatch":
        key = files.other_key
    elif broken == "garbage-ca":
        files.ca.write_text("-----BEGIN CERTIFICATE-----\nbm9wZQ==\n-----END CERTIFICATE-----\n")
    elif broken == "directory":
        cert.unlink()
        cert.mkdir()
    with pytest.raises(TlsError, match=message):
        ServerCertificates(cert, key, files.ca, logger=LOG).credentials()


def test_a_rotation_is_taken_only_once_key_and_certificate_match(files: Files) -> None:
    certificates = ServerCertificates(files.cert, files.key, None, logger=LOG)
    certificates.credentials()
    assert certificates.fetch() is None  # nothing changed

    replacement = trustme.CA().issue_cert("relay.private.aws.internal")
    # Half-way: the new certificate is in place, its key is not yet.
    files.cert.write_bytes(b"".join(b.bytes() for b in replacement.cert_chain_pems))
    assert certificates.fetch() is None
    assert certificates.reloads == 0
    files.key.write_bytes(replacement.private_key_pem.bytes())
    assert certificates.fetch() is not None
    assert certificates.reloads == 1


# --- relay serve, as a user without privileges -----------------------------------------------


async def _serve(*tls_args: str) -> tuple[int, str]:
    argv = [
        sys.executable,
        *("-m", "relay", "serve", "--listen", "127.0.0.1:0", "--store", "memory", *tls_args),
    ]
    finished = await run(as_nonroot(argv), env=child_env())
    return finished.code, finished.err


def _one_error(err: str) -> str:
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if "ERROR" in line]
    assert len(errors) == 1, err
    return errors[0]


async def test_relay_serves_tls_with_usable_files(files: Files) -> None:
    # The control case: the same command with good files gets as far as serving.
    async with relay_process(
        "127.0.0.1:0",
        args=["--store", "memory", "--tls-cert", str(files.cert), "--tls-key", str(files.key)],
    ) as relay:
        assert relay.port > 0


async def test_a_missing_certificate(files: Files) -> None:
    missing = files.directory / "nowhere.crt"
    code, err = await _serve("--tls-cert", str(missing), "--tls-key", str(files.key))
    assert code == 1
    assert f"cannot read the certificate {missing} (--tls-cert): it does not exist" in _one_error(
        err
    )


async def test_a_key_the_user_cannot_read(files: Files) -> None:
    files.key.chmod(0o000)
    code, err = await _serve("--tls-cert", str(files.cert), "--tls-key", str(files.key))
    assert code == 1
    message = _one_error(err)
    assert f"cannot read the private key {files.key} (--tls-key)" in message
    assert f"relay's user (uid {user_id()}, gid {group_id()}) may not read it" in message
    assert f"fsGroup: {group_id()}" in message


async def test_a_certificate_that_is_not_pem(files: Files) -> None:
    files.cert.write_bytes(b"\x00garbage\xff")
    code, err = await _serve("--tls-cert", str(files.cert), "--tls-key", str(files.key))
    assert code == 1
    assert f"the certificate {files.cert} (--tls-cert) is not PEM" in _one_error(err)


async def test_a_key_that_does_not_belong_to_the_certificate(files: Files) -> None:
    code, err = await _serve("--tls-cert", str(files.cert), "--tls-key", str(files.other_key))
    assert code == 1
    assert (
        f"the private key {files.other_key} (--tls-key) does not belong to the certificate "
        f"{files.cert} (--tls-cert)"
    ) in _one_error(err)
