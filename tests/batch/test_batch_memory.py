"""Bounded memory: a job streams an input far larger than one chunk, and its peak RSS does not
grow with the input (a ~205 MB Parquet input against a ~26 MB one: both many chunks long, so the
smaller one already holds the pipeline's steady state)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from batch_testlib import WIDTH, digits_rows

#: Runs the CLI in a fresh process and prints its peak RSS (VmHWM, kB) when the job is done.
_PROBE = """
import sys
from appliance.cli import main
code = main(sys.argv[1:])
hwm = next(l for l in open("/proc/self/status") if l.startswith("VmHWM:"))
print(int(hwm.split()[1]))
sys.exit(code)
"""


def _write(path: Path, rows: int, base: np.ndarray) -> None:
    """``rows`` rows in row groups of 20k, written group by group (the test itself stays small)."""
    rng = np.random.default_rng(0)
    schema = pa.schema([("input", pa.list_(pa.float32(), WIDTH))])
    with pq.ParquetWriter(path, schema, compression="none") as writer:
        for start in range(0, rows, 20_000):
            count = min(20_000, rows - start)
            x = base[rng.integers(0, len(base), count)] + rng.random((count, WIDTH), dtype=np.float32)
            writer.write_table(pa.table({"input": pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), WIDTH)},
                                        schema=schema))


def _peak_rss_kib(repository: Path, tmp_path: Path, source: Path, name: str) -> int:
    command = [sys.executable, "-c", _PROBE, "batch", "run", "--model", "digits", "--input", str(source),
               "--output", str(tmp_path / name), "--models", str(repository), "--state-dir", str(tmp_path / "state"),
               "--progress", "lines"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "APPLIANCE_AUDIT_ENABLED": "false"})
    assert result.returncode == 0, result.stderr
    return int(result.stdout.split()[-1])


def test_peak_memory_does_not_grow_with_the_input(repository: Path, tmp_path: Path) -> None:
    base = digits_rows(repository, 1797)
    small, large = tmp_path / "small.parquet", tmp_path / "large.parquet"
    _write(small, 100_000, base)
    _write(large, 800_000, base)  # 800k rows x 64 float32 = ~205 MB of features
    assert large.stat().st_size > 200 * 10**6
    baseline = _peak_rss_kib(repository, tmp_path, small, "out-small")
    peak = _peak_rss_kib(repository, tmp_path, large, "out-large")
    assert pq.read_metadata(tmp_path / "out-large" / "part-000000.parquet").num_rows == 8192
    growth_mib = (peak - baseline) / 1024
    # Holding the input would add 180+ MiB; transients of a few chunks measured +30-90 MiB here.
    assert growth_mib < 120, f"peak RSS grew by {growth_mib:.0f} MiB for an input 8x larger"
