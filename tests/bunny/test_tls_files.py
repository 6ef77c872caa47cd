"""bunny's TLS files (--tls-ca, --tls-cert, --tls-key) that cannot be used stop it before it
sends anything, with a message naming the flag, the file, what is wrong and what to give
instead: exit status 2, no traceback.

Each case runs the real command; where a permission is the subject it runs as a user without
privileges (:mod:`tests.nonroot`: root reads every file).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme
from cryptography.hazmat.primitives import serialization

from lab.processes import run_bunny
from tests.nonroot import IS_ROOT, NONROOT_UID, as_nonroot, shared_dir


@dataclass(frozen=True)
class Files:
    ca: Path
    cert: Path
    key: Path
    other_key: Path
    """The key of another certificate from the same CA."""
    folder: Path


@pytest.fixture
def files() -> Iterator[Files]:
    """Certificates made for this run, in a directory every user may enter."""
    with shared_dir("bunny-tls-") as folder:
        yield _make(folder)


def _make(folder: Path) -> Files:
    ca = trustme.CA()
    leaf, other = ca.issue_cert("bunny.example"), ca.issue_cert("someone-else.example")
    made = Files(
        folder / "ca.pem", folder / "cert.pem", folder / "key.pem", folder / "other.pem", folder
    )
    ca.cert_pem.write_to_path(str(made.ca))
    leaf.cert_chain_pems[0].write_to_path(str(made.cert))
    leaf.private_key_pem.write_to_path(str(made.key))
    other.private_key_pem.write_to_path(str(made.other_key))
    for path in (made.ca, made.cert, made.key, made.other_key):
        path.chmod(0o644)
    return made


async def _refused(flags: list[str], place: Callable[[list[str]], list[str]] | None = None) -> str:
    """Run ``bunny submit`` with ``flags``; the one line it says, after checking the exit."""
    code, out, err = await run_bunny(
        "submit", "--target", "127.0.0.1:9", *flags, place=place, timeout=30
    )
    assert code == 2, (out, err)
    assert "Traceback" not in err
    assert not out
    (line,) = err.strip().splitlines()
    assert line.startswith("bunny: error: --tls-"), line
    return line


@pytest.mark.parametrize("flag", ["--tls-ca", "--tls-cert", "--tls-key"])
async def test_a_missing_tls_file_is_named_with_its_flag_and_variable(
    files: Files, flag: str
) -> None:
    missing = files.folder / "nowhere.pem"
    given = {"--tls-ca": files.ca, "--tls-cert": files.cert, "--tls-key": files.key}
    given[flag] = missing
    line = await _refused([arg for f, p in given.items() for arg in (f, str(p))])

    assert f"{flag} {missing}: no such file" in line
    assert f"BUNNY_{flag[2:].upper().replace('-', '_')}" in line


async def test_a_tls_file_bunny_may_not_read_names_the_user_and_what_to_change(
    files: Files,
) -> None:
    files.key.chmod(0)

    line = await _refused(["--tls-cert", str(files.cert), "--tls-key", str(files.key)], as_nonroot)

    assert f"--tls-key {files.key}: permission denied for" in line
    if IS_ROOT:
        assert f"uid {NONROOT_UID}" in line
    assert "readable by that user" in line


async def test_a_directory_given_for_a_tls_file_says_what_it_holds(files: Files) -> None:
    # A Kubernetes secret mounted as a volume is a directory of files, an easy slip.
    secret = files.folder / "secret"
    secret.mkdir()
    (secret / "ca.crt").write_bytes(files.ca.read_bytes())

    line = await _refused(["--tls-ca", str(secret)])

    assert f"--tls-ca {secret} is a directory (it holds ca.crt)" in line
    assert "takes the PEM CA bundle" in line


@pytest.mark.parametrize("flag", ["--tls-ca", "--tls-cert", "--tls-key"])
async def test_a_tls_file_that_is_not_pem_is_named_and_what_it_should_hold_said(
    files: Files, flag: str
) -> None:
    garbage = files.folder / "garbage.pem"
    garbage.write_bytes(os.urandom(300))
    given = {"--tls-ca": files.ca, "--tls-cert": files.cert, "--tls-key": files.key}
    given[flag] = garbage

    line = await _refused([arg for f, p in given.items() for arg in (f, str(p))])

    wanted = {
        "--tls-ca": "is not a PEM certificate file",
        "--tls-cert": "is not a PEM certificate file",
        "--tls-key": "is not a PEM private key",
    }[flag]
    assert f"{flag} {garbage} {wanted}" in line


async def test_a_key_that_does_not_match_the_certificate_is_called_so(files: Files) -> None:
    line = await _refused(["--tls-cert", str(files.cert), "--tls-key", str(files.other_key)])

    assert f"--tls-key {files.other_key} is not the private key of --tls-cert {files.cert}" in line


async def test_an_encrypted_key_is_refused_without_asking_for_a_pass_phrase(
    files: Files,
) -> None:
    # Without a terminal OpenSSL's prompt would fail; with one it would wait for a pass phrase.
    encrypted = files.folder / "encrypted.pem"
    key = serialization.load_pem_private_key(files.key.read_bytes(), password=None)
    encrypted.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )

    line = await _refused(["--tls-cert", str(files.cert), "--tls-key", str(encrypted)])

    assert f"--tls-key {encrypted} is encrypted with a pass phrase" in line
