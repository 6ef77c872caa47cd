"""What a user installs: the wheel holds the contract, the shared runtime, bunny and relay.

The lab (development code) never enters it.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHIPPED = ("bunnyrelay", "bunny", "relay")


def _build_wheel(out_dir: Path) -> Path:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--wheel-dir",
            str(out_dir),
            str(REPO),
        ],
        check=True,
        timeout=120,
    )
    (wheel,) = out_dir.glob("bunny_relay-*.whl")
    return wheel


def test_wheel_holds_only_the_services_and_their_shared_package(tmp_path: Path) -> None:
    with zipfile.ZipFile(_build_wheel(tmp_path)) as wheel:
        names = wheel.namelist()
    packages = {
        name.split("/", 1)[0] for name in names if not name.split("/", 1)[0].endswith(".dist-info")
    }
    assert packages == set(SHIPPED), (
        f"unexpected top-level entries in the wheel: {sorted(packages)}"
    )
    assert not [n for n in names if "/lab/" in n or n.startswith("lab/")], (
        "the lab entered the wheel"
    )
    assert "bunnyrelay/protogen.py" not in names, "protogen (needs grpc_tools) entered the wheel"
    assert "bunnyrelay/v1/jobs_pb2.py" in names
    assert "relay/cli.py" in names
    assert "bunny/cli.py" in names
