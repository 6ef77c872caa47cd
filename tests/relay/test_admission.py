"""Admission: the in-flight limit, its pushback estimate, the drain switch and waiting for idle."""

from __future__ import annotations

import asyncio

import pytest

from relay.admission import MAX_PUSHBACK_MS, MIN_PUSHBACK_MS, Admission
from relay.errors import Draining, Overloaded


def test_slots_are_taken_up_to_the_limit_then_refused_with_a_pushback() -> None:
    admission = Admission(2)
    admission.enter()
    admission.enter()
    with pytest.raises(Overloaded) as refused:
        admission.enter()

    assert admission.in_flight == 2
    assert refused.value.retry_after_ms == MIN_PUSHBACK_MS
    assert refused.value.details == {"in_flight": "2", "limit": "2"}
    assert "--max-in-flight" in refused.value.message
    admission.leave(0.0)
    admission.enter()  # a slot given back is a slot to take


def test_the_pushback_follows_how_long_jobs_take_shared_by_the_slots() -> None:
    admission = Admission(4)
    for _ in range(200):  # long enough for the average to settle on 2 s jobs
        admission.enter()
        admission.leave(2.0)
    # With every slot busy, one frees about every 2 s / 4 slots.
    assert admission.pushback_ms() == pytest.approx(500, abs=1)

    for _ in range(200):
        admission.enter()
        admission.leave(3600.0)
    assert admission.pushback_ms() == MAX_PUSHBACK_MS


def test_a_closed_admission_refuses_as_draining_while_slots_are_free() -> None:
    admission = Admission(8)
    admission.close()
    with pytest.raises(Draining):
        admission.enter()
    assert admission.in_flight == 0


async def test_wait_idle_returns_when_the_last_slot_is_given_back() -> None:
    admission = Admission(3)
    await admission.wait_idle()  # idle already: no wait
    admission.enter()
    admission.enter()
    idle = asyncio.create_task(admission.wait_idle())
    admission.leave(0.1)
    await asyncio.sleep(0)  # one turn of the loop: a waiter woken now would be done
    assert not idle.done()
    admission.leave(0.1)
    await asyncio.wait_for(idle, timeout=1)


def test_a_limit_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Admission(0)
