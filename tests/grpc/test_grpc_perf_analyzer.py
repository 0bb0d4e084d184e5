"""``perf_analyzer -i grpc`` (Triton's load generator, unchanged) runs against the bundled model,
unary and streaming, without a failed request. Skips when perf_analyzer cannot be installed here
(``bench/setup_perf_analyzer.sh``: a tritonclient 2.51 wheel, the CUDA runtime library, libb64)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from grpc_testlib import grpc_server

BENCH = Path(__file__).resolve().parent.parent.parent / "bench"
sys.path.insert(0, str(BENCH))
import benchlib  # noqa: E402


@pytest.fixture(scope="module")
def perf_analyzer() -> str:
    try:
        found = benchlib.perf_analyzer()
    except (OSError, subprocess.SubprocessError) as exc:
        pytest.skip(f"perf_analyzer cannot be installed here: {exc}")
    if found is None:
        pytest.skip("perf_analyzer cannot be installed here (see bench/setup_perf_analyzer.sh)")
    return found


@pytest.mark.parametrize("streaming", [False, True])
def test_perf_analyzer_grpc(perf_analyzer: str, digits_repository: Path, tmp_path: Path, streaming: bool) -> None:
    data = benchlib.write_input_data(tmp_path / "data.json", "input", benchlib.digits_rows(digits_repository))
    with grpc_server(digits_repository, tmp_path) as server:
        result = benchlib.run_perf(perf_analyzer, server.grpc_port, "digits", data, concurrency=4, interval_ms=500,
                                   protocol="grpc", stability=1000, extra=("--streaming",) if streaming else ())
    assert result.throughput > 0 and result.p50_ms > 0
