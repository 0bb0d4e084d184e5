"""How many worker processes: ``server.workers``, where ``auto`` follows the cores and the memory."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import psutil

from appliance.config import Settings

#: A worker's own memory besides its models: the interpreter, the libraries' heaps, aiohttp buffers.
BASE_WORKER_BYTES = 160 * 1024 * 1024
#: A model in memory (runtime weights, compiled graph, arena) against its files on disk.
MODEL_MEMORY_FACTOR = 3


@dataclass(frozen=True)
class WorkerPlan:
    workers: int
    cores: int
    reason: str
    threads_per_worker: int


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def models_bytes(models: Path) -> int:
    """Bytes of model files in the repository (every version: a rollout may load two)."""
    total = 0
    for suffix in ("*.onnx", "*.bin", "*.xml", "*.data"):
        for path in models.glob(f"*/*/{suffix}"):
            try:
                total += path.stat().st_size
            except OSError:
                continue
    return total


def plan_workers(settings: Settings, available_bytes: int | None = None) -> WorkerPlan:
    """The number of workers to start, and how many inference threads each may use.

    ``auto`` takes one worker per usable core (the event loop is the bottleneck of light and medium
    models: see docs/architecture.md) and lowers it while N copies of the models would not fit in
    the available memory.
    """
    cores = usable_cores()
    configured = settings.server.workers
    if configured != "auto":
        workers, reason = int(configured), "server.workers"
    else:
        available = psutil.virtual_memory().available if available_bytes is None else available_bytes
        per_worker = BASE_WORKER_BYTES + MODEL_MEMORY_FACTOR * models_bytes(settings.server.models)
        by_memory = max(1, available // per_worker)
        workers = max(1, min(cores, by_memory))
        reason = "one per usable core" if workers == cores else (
            f"memory: {available >> 20} MiB available, ~{per_worker >> 20} MiB per worker")
    threads = settings.runtime.threads or max(1, cores // workers)
    return WorkerPlan(workers, cores, reason, threads)
