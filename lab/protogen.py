"""Generate the Python code for the contract in ``proto/``.

``make proto`` writes it into the source tree, where it is committed;
``tests/test_contract.py`` generates it into a scratch folder and fails when
the committed files differ, so a change to a ``.proto`` cannot ship without
its code.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

PROTO_ROOT = Path(__file__).resolve().parent.parent / "proto"


def proto_files() -> list[Path]:
    return sorted(PROTO_ROOT.rglob("*.proto"))


def generate(out_dir: Path) -> list[Path]:
    """Run protoc with the message, gRPC and typing plugins; return the files written."""
    from grpc_tools import protoc  # dev-only dependency

    plugin_dir = str(Path(sys.executable).parent)
    include = Path(protoc.__file__).parent / "_proto"
    sources = [str(p.relative_to(PROTO_ROOT)) for p in proto_files()]
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        f"--plugin=protoc-gen-mypy={shutil.which('protoc-gen-mypy', path=plugin_dir)}",
        f"--plugin=protoc-gen-mypy_grpc={shutil.which('protoc-gen-mypy_grpc', path=plugin_dir)}",
        f"--mypy_out={out_dir}",
        f"--mypy_grpc_out={out_dir}",
        *sources,
    ]
    if protoc.main(args) != 0:
        raise SystemExit(f"protoc failed for {', '.join(sources)}")
    written = []
    for source in sources:
        stem = Path(source).with_suffix("")
        for suffix in ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi"):
            written.append(out_dir / f"{stem}{suffix}")
    return written


def main() -> None:
    out_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(".")
    for path in generate(out_dir):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
