"""bunny's answer cache on explicit times (its clock is the caller's): TTLs, serve-stale
(RFC 8767) only after a failed refresh, negative caching (RFC 2308), and its bound."""

from __future__ import annotations

import pytest

from bunny.dns import cache as cache_module
from bunny.dns.cache import AnswerCache
from bunny.dns.model import DnsQuery, Resolution
from bunny.errors import DnsTimeout, NameNotFound

NAME = "relay.private.aws.internal"
T0 = 1000.0


def _answer(name: str = NAME, *, ttl: int = 30, at: float = T0) -> Resolution:
    return Resolution(name, name, ("10.20.0.5",), ttl, "wire", (), at + ttl)


def _cache(**values: float) -> AnswerCache:
    settings = {"stale_max": 300.0, "stale_ttl": 30, "stale_recheck": 5.0, "negative_ttl": 5.0}
    settings.update(values)
    return AnswerCache(**settings)  # type: ignore[arg-type]


def _timeout() -> DnsTimeout:
    query = DnsQuery(NAME, "A", "10.0.0.10:53", 1, "TIMEOUT", 2000.0, (), None, "wire")
    return DnsTimeout(NAME, queries=[query])


def test_an_answer_is_fresh_until_its_ttl_runs_out_and_a_hit_allocates_nothing() -> None:
    cache = _cache()
    cache.store(_answer(ttl=30))

    first, again = cache.fresh(NAME, T0 + 1), cache.fresh(NAME, T0 + 29.9)

    assert first is not None
    assert (first.source, first.queries) == ("cache", ())
    assert again is first
    assert cache.fresh(NAME, T0 + 30) is None


def test_stale_is_served_only_after_a_refresh_failed_then_backs_off_then_ends() -> None:
    cache = _cache(stale_max=60.0, stale_ttl=7, stale_recheck=5.0)
    cache.store(_answer(ttl=30))
    expired = T0 + 31

    assert cache.stale_while_rechecking(NAME, expired) is None, "not before a refresh failed"
    stale = cache.serve_stale(NAME, expired, _timeout())

    assert stale is not None
    assert (stale.source, stale.ttl) == ("stale-cache", 7)
    assert [q.rcode for q in stale.queries] == ["TIMEOUT"]
    assert cache.refresh_error(NAME) == "DnsTimeout"
    # While the failed refresh backs off, stale answers come without a refresh...
    held = cache.stale_while_rechecking(NAME, expired + 4.9)
    assert held is not None
    assert held.queries == ()
    # ...then it is time to try again, and past stale_max nothing stale is left.
    assert cache.stale_while_rechecking(NAME, expired + 5.0) is None
    assert cache.serve_stale(NAME, T0 + 30 + 60, _timeout()) is None
    assert cache.serve_stale(NAME, T0 + 30 + 61, _timeout()) is None


def test_a_fresh_answer_is_never_served_as_stale() -> None:
    cache = _cache()
    cache.store(_answer(ttl=30))

    assert cache.serve_stale(NAME, T0 + 10, _timeout()) is None


def test_a_negative_answer_is_kept_for_negative_ttl_and_ends_any_stale_answer() -> None:
    cache = _cache(negative_ttl=5.0)
    cache.store(_answer(ttl=30))
    missing = NameNotFound(NAME)

    cache.store_negative(NAME, missing, T0 + 31)

    assert cache.negative(NAME, T0 + 35.9) is missing
    assert cache.negative(NAME, T0 + 36) is None
    # The zone said the name is gone: serve-stale is for a failed path, not for that.
    assert cache.serve_stale(NAME, T0 + 37, _timeout()) is None


def test_a_new_answer_replaces_a_negative_one_and_negative_ttl_zero_keeps_none() -> None:
    cache = _cache()
    cache.store_negative(NAME, NameNotFound(NAME), T0)
    cache.store(_answer(ttl=30, at=T0 + 1))
    assert cache.negative(NAME, T0 + 2) is None

    off = _cache(negative_ttl=0.0)
    off.store_negative(NAME, NameNotFound(NAME), T0)
    assert off.negative(NAME, T0) is None


def test_the_cache_is_bounded_and_forgets_the_oldest_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cache_module, "MAX_ENTRIES", 3)
    cache = _cache()
    for n in range(4):
        cache.store(_answer(f"n{n}.example"))

    assert cache.fresh("n0.example", T0) is None
    assert all(cache.fresh(f"n{n}.example", T0) is not None for n in (1, 2, 3))


def test_a_new_answer_ends_the_back_off_of_the_refresh_that_failed_before_it() -> None:
    cache = _cache(stale_max=60.0, stale_recheck=5.0)
    cache.store(_answer(ttl=30))
    assert cache.serve_stale(NAME, T0 + 31, _timeout()) is not None

    cache.store(_answer(ttl=30, at=T0 + 32))

    assert cache.refresh_error(NAME) == ""
    # Expired again: the old back-off must not hold back the refresh of the new answer.
    assert cache.stale_while_rechecking(NAME, T0 + 63) is None
    stale = cache.serve_stale(NAME, T0 + 63, _timeout())
    assert stale is not None
    assert stale.expires_at == T0 + 63 + 30
    assert cache.refresh_error(NAME) == "DnsTimeout"


def test_a_name_the_bound_drops_takes_its_failed_refresh_with_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(cache_module, "MAX_ENTRIES", 2)
    cache = _cache()
    cache.store(_answer("n0.example"))
    assert cache.serve_stale("n0.example", T0 + 31, _timeout()) is not None
    for n in (1, 2):
        cache.store(_answer(f"n{n}.example"))

    assert cache.refresh_error("n0.example") == ""
    assert cache.stale_while_rechecking("n0.example", T0 + 32) is None
    assert cache.expired_for("n0.example", T0 + 32) == 0.0


def test_the_answer_every_caller_is_handed_cannot_be_changed_by_one_of_them() -> None:
    cache = _cache()
    cache.store(_answer())
    hit = cache.fresh(NAME, T0)
    assert hit is not None

    with pytest.raises(AttributeError):
        hit.addresses = ("192.0.2.66",)  # type: ignore[misc]

    again = cache.fresh(NAME, T0)
    assert again is not None
    assert again.addresses == ("10.20.0.5",)
