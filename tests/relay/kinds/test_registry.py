"""The registry: the built-in kinds are the files in relay/kinds/; mistakes are caught early."""

from __future__ import annotations

import pytest

from relay.kinds.handler import JobInput, Kind, kind
from relay.kinds.registry import Registry


def test_the_built_in_kinds_are_the_kinds_defined_in_relay_kinds() -> None:
    assert Registry.builtin().names == ("echo", "fail", "sha256", "sleep", "wordcount")


def test_each_call_to_builtin_is_a_registry_of_its_own() -> None:
    first = Registry.builtin()

    @first.kind("upper")
    async def upper(job: JobInput) -> bytes:
        return job.payload.upper()

    assert first.get("upper") is upper
    assert "upper" in first
    assert "upper" not in Registry.builtin()


def test_a_kind_is_a_name_and_an_async_handler() -> None:
    @kind("upper")
    async def upper(job: JobInput) -> bytes:
        return job.payload.upper()

    assert isinstance(upper, Kind)
    assert Registry([upper]).names == ("upper",)


def test_registration_mistakes_are_caught_when_the_module_loads() -> None:
    kinds = Registry()

    @kinds.kind("once")
    async def once(job: JobInput) -> bytes:
        return b""

    with pytest.raises(ValueError, match="already registered"):
        kinds.kind("once")(once)
    with pytest.raises(ValueError, match="kind name"):
        kinds.kind("no spaces")
    with pytest.raises(ValueError, match="kind name"):
        kind("-leading-dash")
    with pytest.raises(TypeError, match="async function"):
        kinds.kind("sync")(lambda job: b"")  # type: ignore[arg-type,return-value]
