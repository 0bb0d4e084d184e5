"""``appliance batch run``: outputs equal the runtime's, bad rows are rejected with a reason, and
every input row appears exactly once (also after kill -9 and --resume)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest
from batch_testlib import WIDTH, digits_rows, read_output, read_rejects, reference, write_input

from appliance.cli import main


def batch(repository: Path, tmp_path: Path, source: Path, output: Path, *extra: str) -> int:
    return main(["batch", "run", "--model", "digits", "--input", str(source), "--output", str(output),
                 "--models", str(repository), "--state-dir", str(tmp_path / "state"), "--progress", "lines",
                 *extra])


@pytest.fixture(autouse=True)
def no_audit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APPLIANCE_AUDIT_ENABLED", "false")


@pytest.mark.parametrize("kind", ["parquet", "folder", "csv", "jsonl", "npy"])
def test_outputs_equal_the_runtime_run_directly(repository: Path, tmp_path: Path, kind: str) -> None:
    x = digits_rows(repository, 2500)
    source = write_input(x, tmp_path / "in", kind)
    assert batch(repository, tmp_path, source, tmp_path / "out", "--top-k", "2") == 0
    ids, probabilities = read_output(tmp_path / "out")
    assert ids.tolist() == list(range(len(x)))
    expected = reference(repository, tmp_path, x)
    assert np.array_equal(probabilities, expected)  # same runtime, same request sizes: bit-identical
    journal = json.loads((tmp_path / "out" / "_journal.json").read_text())
    assert journal["progress"]["done"] and journal["progress"]["rows_ok"] == len(x)
    assert journal["job"]["version"] == 1 and len(journal["job"]["manifest_sha256"]) == 64


def test_top_k_labels_and_version_columns(repository: Path, tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    x = digits_rows(repository, 100)
    assert batch(repository, tmp_path, write_input(x, tmp_path / "in", "parquet"), tmp_path / "out",
                 "--top-k", "3", "--model", "digits:1") == 0
    table = pq.read_table(tmp_path / "out").sort_by("row_id")
    top = table.column("top_k_labels").to_pylist()
    best = reference(repository, tmp_path, x).argmax(axis=1)
    assert [row[0] for row in top] == [str(b) for b in best] and all(len(row) == 3 for row in top)
    assert set(table.column("model").to_pylist()) == {"digits"}
    assert set(table.column("model_version").to_pylist()) == {"1"}


def _bad_csv(repository: Path, path: Path) -> int:
    x = digits_rows(repository, 40)
    columns = {f"f{j}": [repr(float(v)) for v in x[:, j]] for j in range(WIDTH)}
    columns["f5"][3] = "abc"
    columns["f0"][7] = None
    columns["f1"][9] = "inf"  # (pyarrow reads "nan" in a CSV as a missing value)
    pacsv.write_csv(pa.table(columns), path)
    return len(x)


def test_bad_rows_go_to_the_rejects_file_with_their_reason(repository: Path, tmp_path: Path) -> None:
    rows = _bad_csv(repository, tmp_path / "in.csv")
    assert batch(repository, tmp_path, tmp_path / "in.csv", tmp_path / "out") == 0
    ids, _ = read_output(tmp_path / "out")
    rejects = read_rejects(tmp_path / "out")
    assert sorted([*ids.tolist(), *rejects]) == list(range(rows))  # every row exactly once
    assert set(rejects) == {3, 7, 9}
    assert "not a number" in rejects[3] and "missing" in rejects[7] and "infinite" in rejects[9]


def test_wrong_width_rows_are_rejected(repository: Path, tmp_path: Path) -> None:
    lines = [{"input": [1.0] * WIDTH}, {"input": [1.0] * (WIDTH - 1)}, {"input": None}, {"input": [1.0] * WIDTH}]
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert batch(repository, tmp_path, source, tmp_path / "out") == 0
    ids, _ = read_output(tmp_path / "out")
    rejects = read_rejects(tmp_path / "out")
    assert ids.tolist() == [0, 3] and sorted(rejects) == [1, 2]
    assert "63 values" in rejects[1] and "missing" in rejects[2]


def test_strict_stops_at_the_first_bad_row(repository: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    _bad_csv(repository, tmp_path / "in.csv")
    assert batch(repository, tmp_path, tmp_path / "in.csv", tmp_path / "out", "--strict") == 1
    assert "row 3" in capsys.readouterr().err


def test_a_full_output_folder_is_refused_without_resume(repository: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    source = write_input(digits_rows(repository, 10), tmp_path / "in", "npy")
    assert batch(repository, tmp_path, source, tmp_path / "out") == 0
    assert batch(repository, tmp_path, source, tmp_path / "out") == 1
    assert "--resume" in capsys.readouterr().err


def test_kill_9_then_resume_gives_every_row_exactly_once(repository: Path, tmp_path: Path) -> None:
    x = digits_rows(repository, 60_000)
    source = write_input(x, tmp_path / "in", "parquet")
    output = tmp_path / "out"
    args = ["--batch-size", "16", "--chunk-rows", "1024"]
    command = [sys.executable, "-m", "appliance", "batch", "run", "--model", "digits", "--input", str(source),
               "--output", str(output), "--models", str(repository), "--state-dir", str(tmp_path / "state"),
               "--progress", "lines", *args]
    process = subprocess.Popen(command, env={**os.environ}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    journal = output / "_journal.json"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if journal.exists() and json.loads(journal.read_text())["progress"]["chunks"] >= 3:
            break
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    progress = json.loads(journal.read_text())["progress"]
    assert not progress["done"], "the job finished before it could be killed"
    assert batch(repository, tmp_path, source, output, "--resume", *args) == 0
    ids, probabilities = read_output(output)
    assert ids.tolist() == list(range(len(x)))  # nothing missing, nothing twice
    assert np.array_equal(probabilities, reference(repository, tmp_path, x, batch_size=16))


def test_nan_is_rejected_unless_allowed(repository: Path, tmp_path: Path) -> None:
    x = digits_rows(repository, 20)
    x[4, 10] = np.nan
    source = write_input(x, tmp_path / "in", "npy")
    assert batch(repository, tmp_path, source, tmp_path / "out") == 0
    assert list(read_rejects(tmp_path / "out")) == [4]
    assert batch(repository, tmp_path, source, tmp_path / "out-nan", "--allow-nan") == 0
    assert read_output(tmp_path / "out-nan")[0].tolist() == list(range(20))


def test_an_unknown_model_is_an_error_not_a_traceback(repository: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    source = write_input(digits_rows(repository, 4), tmp_path / "in", "npy")
    assert main(["batch", "run", "--model", "nope", "--input", str(source), "--output", str(tmp_path / "out"),
                 "--models", str(repository), "--state-dir", str(tmp_path / "state")]) == 1
    assert "unknown model 'nope'" in capsys.readouterr().err
