"""Which names a lookup asks (glibc's search-list rules) and which it refuses."""

from __future__ import annotations

import pytest

from bunny.dns.names import candidates, check_name
from bunny.errors import InvalidName
from tests.bunny.conftest import SEARCH


def test_candidates_follow_glibc_order() -> None:
    assert candidates("relay.private.aws.internal", SEARCH, 5) == (
        "relay.private.aws.internal.bunny.svc.cluster.local",
        "relay.private.aws.internal.svc.cluster.local",
        "relay.private.aws.internal.cluster.local",
        "relay.private.aws.internal",
    )
    assert candidates("relay.private.aws.internal", SEARCH, 3)[0] == "relay.private.aws.internal"
    assert candidates("Relay.Private.AWS.internal.", SEARCH, 5) == ("relay.private.aws.internal",)


def test_a_search_domain_that_makes_the_name_too_long_is_skipped() -> None:
    long_domain = ".".join(["d" * 62] * 4)  # 251 characters
    assert candidates("relay", (long_domain, "cluster.local"), 1) == (
        "relay.cluster.local",
        "relay",
    )


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("", "empty"),
        (".", "empty"),
        ("relay..internal", "empty label"),
        ("r" * 64 + ".internal", "longer than 63"),
        ("relay.éxample", "ASCII"),
        ("re lay.internal", "characters DNS names cannot"),
        ("a." * 127 + "b", "longer than 253"),
        # Short names and long ones are checked by different means: both must refuse.
        (".relay", "empty label"),
        ("relay..", "empty label"),
        ("re\tlay", "characters DNS names cannot"),
        ('re"lay', "characters DNS names cannot"),
        ("re(lay)", "characters DNS names cannot"),
        ("relay\\.internal", "characters DNS names cannot"),
        ("r" * 60 + ".re lay", "characters DNS names cannot"),
        ("r" * 60 + "..x", "empty label"),
    ],
)
def test_names_dns_cannot_ask_are_refused_saying_why(name: str, why: str) -> None:
    with pytest.raises(InvalidName, match=why):
        check_name(name)


@pytest.mark.parametrize(
    "name",
    [
        "relay.private.aws.internal",
        "relay.private.aws.internal.",
        "_srv.x",
        "r" * 63,
        "r" * 63 + ".",
        ".".join(["r" * 63] * 3) + ".internal",
    ],
)
def test_ordinary_names_pass(name: str) -> None:
    check_name(name)
