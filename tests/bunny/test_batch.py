"""Job ids bunny makes when the user gives none."""

from __future__ import annotations

import uuid

from bunny.batch import job_ids, new_job_id


def test_a_fresh_job_id_is_a_random_uuid_in_its_usual_form() -> None:
    for text in (new_job_id() for _ in range(2000)):
        parsed = uuid.UUID(text)
        assert str(parsed) == text
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122


def test_fresh_job_ids_differ_in_every_random_bit() -> None:
    numbers = [uuid.UUID(new_job_id()).int for _ in range(2000)]
    assert len(set(numbers)) == len(numbers)
    varying = 0
    for number in numbers:
        varying |= number ^ numbers[0]
    # 128 bits, of which the version (4 bits) and the variant (2 bits) are fixed.
    assert bin(varying).count("1") == 122


def test_a_batch_without_a_base_id_gets_fresh_uuids_and_one_with_a_base_numbered_ids() -> None:
    fresh = list(job_ids(3, None))
    assert len(set(fresh)) == 3
    assert all(uuid.UUID(text).version == 4 for text in fresh)
    assert list(job_ids(1, "nightly")) == ["nightly"]
    assert list(job_ids(2, "nightly")) == ["nightly-1", "nightly-2"]
