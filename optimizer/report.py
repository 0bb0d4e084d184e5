"""The table printed after a run and stored in each manifest's ``metrics.report``.

One row per artifact, FP32 baselines included, all measured on this host in one run, so the
speedup column compares like with like (same runtime, same host, same minute).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from optimizer.benchmark import Speed


@dataclass
class Row:
    artifact: str                 # e.g. "openvino int8"
    format: str                   # openvino | onnx (the artifact format)
    runtime: str                  # openvino | onnxruntime
    precision: str                # fp32 | int8
    metric: str
    value: float | None           # metric value on the eval rows
    drop_points: float | None
    size_bytes: int
    speed: Speed | None
    status: str                   # baseline | published | refused | failed
    speedup_latency: float | None = None
    speedup_throughput: float | None = None
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["speed"] = self.speed.to_dict() if self.speed else None
        return data


def add_speedups(rows: list[Row]) -> None:
    """Fill speedups of each row against the FP32 baseline of the same runtime."""
    baselines = {row.runtime: row for row in rows if row.status == "baseline"}
    for row in rows:
        base = baselines.get(row.runtime)
        if row.speed is None or base is None or base.speed is None:
            continue
        row.speedup_latency = round(base.speed.latency_p50_ms / row.speed.latency_p50_ms, 2)
        row.speedup_throughput = round(row.speed.throughput_rows_s / base.speed.throughput_rows_s, 2)


_HEADERS = ("artifact", "metric", "drop", "size", "p50 ms", "p99 ms", "rows/s", "speedup", "status")


def render(rows: list[Row]) -> str:
    """A plain-text table (no colours: it also goes to logs and CI output)."""
    lines = [_HEADERS] + [_cells(row) for row in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(_HEADERS))]
    text = ["  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
            for line in lines]
    text.insert(1, "  ".join("-" * width for width in widths))
    notes = [f"  {row.artifact}: {row.note}" for row in rows if row.note]
    return "\n".join(text + notes)


def _cells(row: Row) -> tuple[str, ...]:
    speed = row.speed
    value = "-" if row.value is None else f"{row.metric} {row.value:.4f}"
    drop = "-" if row.drop_points is None else f"{row.drop_points:.2f}"
    speedup = "-"
    if row.speedup_latency is not None:
        speedup = f"{row.speedup_latency:.2f}x lat / {row.speedup_throughput:.2f}x thr"
    return (
        row.artifact, value, drop, _size(row.size_bytes),
        f"{speed.latency_p50_ms:.3f}" if speed else "-",
        f"{speed.latency_p99_ms:.3f}" if speed else "-",
        f"{speed.throughput_rows_s:.0f} @{speed.max_batch}" if speed else "-",
        speedup, row.status,
    )


def _size(size: int) -> str:
    if size >= 1 << 20:
        return f"{size / (1 << 20):.1f} MiB"
    return f"{size / 1024:.1f} KiB"
