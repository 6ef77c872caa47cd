"""Reading a system file bunny depends on (resolv.conf, the hosts file), with an error that
names the file, says what is wrong with it, and what to do."""

from __future__ import annotations

import os
import pwd
from pathlib import Path

from bunnyrelay.settings import SettingError


def running_as() -> str:
    """Who this process reads files as, for messages about permissions."""
    uid = os.geteuid()
    try:
        return f"user {pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def read_text_file(path: str | Path, *, what: str, flag: str, env: str, fix: str) -> str:
    """The text of ``path``; SettingError when it is missing, unreadable, a directory or
    not text. ``what`` names the file in words, ``flag``/``env`` choose another one, and
    ``fix`` ends the message with the other way out (``or give … to …``)."""
    elsewhere = f"point {flag} ({env}) at another file, {fix}"
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise SettingError(f"{path}: no such file to read {what} from; {elsewhere}") from None
    except IsADirectoryError:
        raise SettingError(f"{path} is a directory, not {what}; {elsewhere}") from None
    except PermissionError:
        raise SettingError(
            f"{path}: cannot read {what}: permission denied for {running_as()}; "
            f"make it readable by that user, {elsewhere}"
        ) from None
    except OSError as exc:
        raise SettingError(
            f"{path}: cannot read {what}: {exc.strerror or exc}; {elsewhere}"
        ) from None
    nul = data.find(b"\0")
    try:
        if nul >= 0:
            raise UnicodeDecodeError("utf-8", data, nul, nul + 1, "a NUL byte")
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SettingError(
            f"{path} is not {what}: it is not text (byte {exc.start} is not UTF-8 text); "
            f"{elsewhere}"
        ) from None
