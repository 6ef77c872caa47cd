"""``python -m lab.bench.otlpexport`` measures both OTLP exporters with both encoders in one run."""

from __future__ import annotations

import json

from lab.processes import run_module


async def test_quick_run_reports_every_exporter_and_encoder() -> None:
    code, out, err = await run_module("lab.bench.otlpexport", "--quick", timeout=120)
    assert code == 0, err
    result = json.loads(out)
    assert set(result["cpu_us_per_span"]) == {
        "grpc sdk",
        "grpc bunnyrelay",
        "http/protobuf sdk",
        "http/protobuf bunnyrelay",
    }
    assert all(value > 0 for value in result["cpu_us_per_span"].values())
    assert set(result["sdk_over_bunnyrelay"]) == {"grpc", "http/protobuf"}
