"""The committed generated code matches the .proto files (run `make proto` when this fails)."""

from pathlib import Path

from lab import protogen

REPO = Path(__file__).resolve().parent.parent


def test_generated_code_is_up_to_date(tmp_path: Path) -> None:
    written = protogen.generate(tmp_path)
    assert written, "no .proto files found under proto/"
    stale = [
        str(path.relative_to(tmp_path))
        for path in written
        if path.read_bytes() != (REPO / path.relative_to(tmp_path)).read_bytes()
    ]
    assert not stale, f"generated code is stale, run `make proto`: {stale}"


def test_contract_is_versioned() -> None:
    protos = [p.relative_to(REPO / "proto").as_posix() for p in protogen.proto_files()]
    assert "bunnyrelay/v1/jobs.proto" in protos
