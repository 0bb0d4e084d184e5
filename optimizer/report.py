"""The table printed after a run and stored in each manifest's ``metrics.report``.

One row per artifact, FP32 baselines included, all measured on this host in one run. Speedups are
against the *best* FP32 baseline for each figure (batch-1 latency, serving-batch throughput), which
the notes name, so a candidate is never flattered by comparing it with a slow way to run FP32.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from optimizer.benchmark import Speed


@dataclass
class Row:
    artifact: str                 # e.g. "openvino int8", "onnxruntime fp32"
    format: str                   # openvino | onnx (the artifact format)
    runtime: str                  # openvino | onnxruntime
    precision: str                # fp32 | int8 | int8-weights
    metric: str
    value: float | None           # metric value on the eval rows
    drop_points: float | None
    size_bytes: int
    speed: Speed | None
    status: str                   # baseline | published | refused | failed | superseded
    speedup_latency: float | None = None
    speedup_throughput: float | None = None
    note: str = ""
    output_diff: float | None = None        # mean |output − FP32 output|
    sparsity: float | None = None           # pruned artifacts: fraction of zero weights
    serve: bool | None = None               # published rows: served by the version policy
    decision: str = ""                      # the speed gate's reason, naming the baseline
    runtime_config: dict[str, Any] = field(default_factory=dict)
    speed_gate: dict[str, Any] = field(default_factory=dict)  # the gate's figures (published rows)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["speed"] = self.speed.to_dict() if self.speed else None
        return data


def best_baselines(rows: list[Row]) -> tuple[Row | None, Row | None]:
    """The baseline with the lowest batch-1 latency and the one with the highest throughput."""
    timed = [row for row in rows if row.status == "baseline" and row.speed is not None]
    if not timed:
        return None, None
    fastest = min(timed, key=lambda row: row.speed.latency_p50_ms if row.speed else float("inf"))
    widest = max(timed, key=lambda row: row.speed.throughput_rows_s if row.speed else 0.0)
    return fastest, widest


def add_speedups(rows: list[Row]) -> None:
    """Fill each row's speedups against the best baseline for that figure."""
    fastest, widest = best_baselines(rows)
    for row in rows:
        if row.speed is None or fastest is None or widest is None or not fastest.speed or not widest.speed:
            continue
        row.speedup_latency = round(fastest.speed.latency_p50_ms / row.speed.latency_p50_ms, 2)
        row.speedup_throughput = round(row.speed.throughput_rows_s / widest.speed.throughput_rows_s, 2)


_HEADERS = ("artifact", "metric", "drop", "out diff", "sparsity", "size", "p50 ms", "p99 ms", "rows/s",
            "speedup", "status", "serve")


def render(rows: list[Row]) -> str:
    """A plain-text table (no colours: it also goes to logs and CI output)."""
    lines = [_HEADERS] + [_cells(row) for row in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(_HEADERS))]
    text = ["  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
            for line in lines]
    text.insert(1, "  ".join("-" * width for width in widths))
    fastest, widest = best_baselines(rows)
    if fastest and widest:
        text.append(f"speedup: batch-1 latency vs {fastest.artifact}, throughput vs {widest.artifact}")
    notes = [f"  {row.artifact}: {line}" for row in rows for line in (row.decision, row.note) if line]
    return "\n".join(text + notes)


def _cells(row: Row) -> tuple[str, ...]:
    speed = row.speed
    value = "-" if row.value is None else f"{row.metric} {row.value:.4f}"
    drop = "-" if row.drop_points is None else f"{row.drop_points:.2f}"
    speedup = "-"
    if row.speedup_latency is not None:
        speedup = f"{row.speedup_latency:.2f}x lat / {row.speedup_throughput:.2f}x thr"
    return (
        row.artifact, value, drop,
        "-" if row.output_diff is None else f"{row.output_diff:.2g}",
        "-" if row.sparsity is None else f"{row.sparsity:.0%}",
        _size(row.size_bytes),
        f"{speed.latency_p50_ms:.3f}" if speed else "-",
        f"{speed.latency_p99_ms:.3f}" if speed else "-",
        f"{speed.throughput_rows_s:.0f} @{speed.max_batch}" if speed else "-",
        speedup, row.status, {True: "yes", False: "no", None: "-"}[row.serve],
    )


def _size(size: int) -> str:
    if size >= 1 << 20:
        return f"{size / (1 << 20):.1f} MiB"
    return f"{size / 1024:.1f} KiB"
