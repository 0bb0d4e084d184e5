"""Helpers for the batch tests: inputs in every format, and the runtime run directly for reference."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from appliance.config import Settings
from appliance.repository import Repository

WIDTH = 64


def digits_rows(repository: Path, count: int) -> np.ndarray:
    """``count`` real digits rows (the eval set repeated), float32 [count, 64]."""
    rows = np.load(repository / "digits" / "data" / "eval.npz")["input"].astype(np.float32)
    return np.resize(rows, (count, WIDTH))


def vector_table(x: np.ndarray) -> pa.Table:
    return pa.table({"input": pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), WIDTH)})


def write_input(x: np.ndarray, folder: Path, kind: str) -> Path:
    """``x`` as an input of one kind: parquet, csv (one column per feature), jsonl, npy, folder."""
    folder.mkdir(parents=True, exist_ok=True)
    if kind == "parquet":
        pq.write_table(vector_table(x), folder / "in.parquet", row_group_size=1000)
        return folder / "in.parquet"
    if kind == "folder":
        parts = folder / "parts"
        parts.mkdir()
        for i, start in enumerate(range(0, len(x), 700)):
            pq.write_table(vector_table(x[start:start + 700]), parts / f"p{i:03d}.parquet")
        return parts
    if kind == "csv":
        pacsv.write_csv(pa.table({f"f{j}": x[:, j] for j in range(WIDTH)}), folder / "in.csv")
        return folder / "in.csv"
    if kind == "jsonl":
        with (folder / "in.jsonl").open("w") as handle:
            for row in x:
                handle.write(json.dumps({"input": row.tolist()}) + "\n")
        return folder / "in.jsonl"
    np.save(folder / "in.npy", x)
    return folder / "in.npy"


def reference(repository: Path, tmp: Path, x: np.ndarray, batch_size: int = 64,
              version: str | None = None) -> np.ndarray:
    """The runtime run directly on ``x`` in slices of ``batch_size`` (the job's request size)."""
    settings = Settings().replace("server", models=repository, state_dir=tmp / "ref-state").replace(
        "audit", enabled=False)
    repo = Repository(settings)
    repo.load_one("digits")
    try:
        compiled = repo.resolve("digits", version).compiled
        assert compiled is not None
        return np.concatenate([compiled.infer({"input": x[i:i + batch_size]})["probabilities"]
                               for i in range(0, len(x), batch_size)])
    finally:
        repo.close()


def read_output(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """(row ids, probabilities) of a job's output, ordered by row id."""
    table = pq.read_table(folder).sort_by("row_id")
    ids = table.column("row_id").to_numpy()
    probabilities = np.asarray(table.column("probabilities").combine_chunks().flatten().to_numpy())
    return ids, probabilities.reshape(len(ids), -1)


def read_rejects(folder: Path) -> dict[int, str]:
    rejects = folder / "_rejects"
    if not any(rejects.glob("*.parquet")):
        return {}
    table = pq.read_table(rejects)
    return dict(zip(table.column("row_id").to_pylist(), table.column("reason").to_pylist(), strict=True))


async def started_client(settings: Settings, ready_within_s: float = 180.0) -> Any:  # aiohttp TestClient
    """A real in-process server on 127.0.0.1 and a client, once every model has loaded."""
    from aiohttp.test_utils import TestClient, TestServer

    from appliance.app import create_app

    client = TestClient(TestServer(create_app(settings), host="127.0.0.1"))
    await client.start_server()
    deadline = time.monotonic() + ready_within_s
    while (await client.get("/v2/health/ready")).status != 200:
        if time.monotonic() > deadline:
            await client.close()
            raise TimeoutError(f"server not ready after {ready_within_s}s")
        await asyncio.sleep(0.05)
    return client
