"""Parquet inputs are read in one stable order and a resumed job starts at exactly the row it
left: whole files and row groups it committed are skipped from the footers, the rest sliced."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from appliance.jobs.readers import open_input


def _folder(tmp_path: Path) -> Path:
    """Three files of 250, 0 and 130 rows, written in row groups of 40 rows; ids count up."""
    folder = tmp_path / "in"
    folder.mkdir()
    start = 0
    for name, rows in (("a.parquet", 250), ("b.parquet", 0), ("c.parquet", 130)):
        ids = np.arange(start, start + rows, dtype=np.int64)
        pq.write_table(pa.table({"id": ids, "x": ids.astype(np.float32)}), folder / name, row_group_size=40)
        start += rows
    return folder


@pytest.mark.parametrize("skip", [0, 1, 39, 40, 41, 249, 250, 251, 300, 379, 380])
def test_every_row_after_skip_exactly_once_in_order(tmp_path: Path, skip: int) -> None:
    source = open_input(_folder(tmp_path))
    assert source.total_rows == 380
    ids = [value for batch in source.batches(32, skip, ["id"]) for value in batch.column("id").to_pylist()]
    assert ids == list(range(skip, 380))
    batches = list(source.batches(32, skip))
    assert all(0 < batch.num_rows <= 32 for batch in batches)
