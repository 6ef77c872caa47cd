"""A job's payload from a file or standard input, as its bytes, within a size bunny will send.

bunny cannot ask relay for its limit, so it holds payloads to ``--max-payload-bytes``,
by default relay's own default (1 MiB): a larger one is refused before anything is
sent, saying how to raise the limit when relay's is larger. Past that, relay refuses
a payload over its limit itself, with the size and the limit.
"""

from __future__ import annotations

import os
import sys
from typing import BinaryIO

from bunny.dns.textfile import running_as
from bunnyrelay.settings import SettingError

MiB = 1024 * 1024
DEFAULT_MAX_BYTES = 1 * MiB
"""relay's default ``--max-payload-bytes``."""
LARGEST_MAX_BYTES = 256 * MiB
"""The largest limit relay can be given: gRPC and protobuf stop well before 2 GiB."""
STDIN = "-"


def too_large(size: str, limit: int, what: str) -> SettingError:
    """``what`` (``size``, e.g. ``2000000 bytes``) is more than bunny sends."""
    return SettingError(
        f"{what} is {size}, over --max-payload-bytes {limit} (BUNNY_MAX_PAYLOAD_BYTES), "
        f"the limit of a relay with default settings; send less, or, when relay runs with a "
        f"larger --max-payload-bytes, give bunny the same"
    )


def read_payload(path: str, limit: int) -> bytes:
    """The bytes of ``path`` (``-``: standard input), as they are; SettingError when they
    cannot be read or are more than ``limit``."""
    if path == STDIN:
        return _read_within(sys.stdin.buffer, limit, "the payload on standard input")
    what = f"--payload-file {path}"
    try:
        with open(path, "rb") as file:
            size = os.fstat(file.fileno()).st_size
            if size > limit:  # a regular file says its size: no need to read it to refuse it
                raise too_large(f"{size} bytes", limit, what)
            return _read_within(file, limit, what)
    except FileNotFoundError:
        raise SettingError(f"{what}: no such file") from None
    except IsADirectoryError:
        raise SettingError(f"{what} is a directory; give a file, or - for standard input") from None
    except PermissionError:
        raise SettingError(
            f"{what}: permission denied for {running_as()}; make it readable by that user"
        ) from None
    except OSError as exc:
        raise SettingError(f"{what}: cannot be read: {exc.strerror or exc}") from None


def _read_within(file: BinaryIO, limit: int, what: str) -> bytes:
    # One byte past the limit is enough to know it is over, whatever a pipe holds after.
    data = file.read(limit + 1)
    if len(data) > limit:
        raise too_large(f"more than {limit} bytes", limit, what)
    return data
