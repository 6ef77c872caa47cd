"""The charts' and compose's CoreDNS files are deploy/coredns/'s text, never a drifting copy."""

from __future__ import annotations

from pathlib import Path

from lab import corefiles, deployfiles
from lab.corefiles import Role


def test_every_generated_file_is_current() -> None:
    stale = [
        str(path.relative_to(deployfiles.ROOT))
        for path in deployfiles.stale(deployfiles.expected())
    ]
    assert stale == [], "run `make deploy-files`"
    assert deployfiles.main(["--check"]) == 0


def test_the_charts_carry_the_source_text_verbatim() -> None:
    for chart, role in (("bunny", Role.CONDITIONAL_FORWARD), ("relay", Role.AWS_RESOLVER)):
        path = deployfiles.chart_file(chart, role)
        assert path.read_text() == corefiles.source_text(role)


def test_an_edited_or_missing_file_is_stale(tmp_path: Path) -> None:
    current, edited, missing = tmp_path / "current", tmp_path / "edited", tmp_path / "missing"
    current.write_text("same\n")
    edited.write_text("hand edit\n")
    files = {current: "same\n", edited: "generated\n", missing: "generated\n"}
    assert deployfiles.stale(files) == [edited, missing]
