"""Which names a lookup asks, and which names it refuses before asking anything.

bunny applies the resolv.conf search list itself, not c-ares, so that every
candidate is a query of its own on the trace: that is where the cost of
Kubernetes' ``ndots:5`` for a name like ``relay.private.aws.internal`` shows.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from bunny.errors import InvalidName

MAX_NAME_LENGTH = 253
MAX_LABEL_LENGTH = 63


def candidates(name: str, search: Sequence[str], ndots: int) -> tuple[str, ...]:
    """The FQDNs to ask for ``name``, in order (glibc's rules).

    A trailing dot means exactly that name. Otherwise a name with at least
    ``ndots`` dots is tried as given first and then with each search domain;
    one with fewer dots gets the search domains first.
    """
    lowered = name.lower()
    if lowered.endswith("."):
        return (lowered[:-1],)
    if not search:
        return (lowered,) if len(lowered) <= MAX_NAME_LENGTH else ()
    searched = [f"{lowered}.{domain}" for domain in search]
    ordered = [lowered, *searched] if lowered.count(".") >= ndots else [*searched, lowered]
    # A search domain that makes the name too long is skipped, as glibc does.
    return tuple(dict.fromkeys(c for c in ordered if len(c) <= MAX_NAME_LENGTH))


# A name check_name accepts: labels of 1 to 63 characters, none of them blank or quoting.
_PLAIN_NAME = re.compile(r"(?:[^\s\\\"'().]{1,63}\.)*[^\s\\\"'().]{1,63}")
# What no label may hold. For a name no longer than a label may be, this and the place of
# its dots say all _PLAIN_NAME says, for a third of the cost: one scan, no backtracking.
_NOT_IN_A_LABEL = re.compile(r"[\s\\\"'()]")


def check_name(name: str) -> None:
    """Raise InvalidName saying why ``name`` cannot be asked; return when it can."""
    bare = name[:-1] if name.endswith(".") else name
    # Almost every name is fine: one regular expression says so; the rest says why not.
    if len(bare) <= MAX_LABEL_LENGTH:
        if (
            bare
            and bare.isascii()
            and bare[0] != "."
            and bare[-1] != "."
            and ".." not in bare
            and _NOT_IN_A_LABEL.search(bare) is None
        ):
            return
    elif bare.isascii() and len(bare) <= MAX_NAME_LENGTH and _PLAIN_NAME.fullmatch(bare):
        return
    if not bare:
        raise InvalidName(name, detail="the name is empty")
    if not bare.isascii():
        raise InvalidName(name, detail="only ASCII names can be asked (IDNA is not supported)")
    if len(bare) > MAX_NAME_LENGTH:
        raise InvalidName(name, detail=f"longer than {MAX_NAME_LENGTH} characters")
    for label in bare.split("."):
        if not label:
            raise InvalidName(name, detail="it has an empty label")
        if len(label) > MAX_LABEL_LENGTH:
            raise InvalidName(
                name, detail=f"label {label[:20]}… is longer than {MAX_LABEL_LENGTH} characters"
            )
        if any(ch.isspace() or ch in "\\\"'()" for ch in label):
            raise InvalidName(name, detail=f"label {label!r} has characters DNS names cannot")
