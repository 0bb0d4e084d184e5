"""One batch job: read → convert → ``InferenceService.infer`` → write, as a three-stage pipeline.

::

    reader thread (SCHED_BATCH)   batches of the input → model tensors + rejects   queue of 2 chunks
    event loop                    slices of ``batch_size`` rows → service.infer      ``in_flight`` at once
    writer thread                 Parquet parts + journal (fsync)                    one commit pending

Memory stays bounded whatever the input size: at most two prepared chunks wait for inference and
one for its commit. The job reaches the model only through the service, with a context that
says ``protocol="batch"`` and ``background=True``: admission gives it a slot only while live
requests leave room (it waits, never refused), its answers do not teach the adaptive limit, and
one job record replaces the per-request audit records (see ``JobRunner.audit_record``). The
version is resolved once and pinned by its manifest hash (also on ``--resume``).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from appliance.audit import AuditRecord
from appliance.dataplane.context import RequestContext
from appliance.dataplane.lanes import InputPlan, input_plan
from appliance.dataplane.service import InferenceService
from appliance.dataplane.tensors import InferInput, InferRequest, from_numpy, tensor_digest
from appliance.jobs.features import Binding, bind_inputs, convert
from appliance.jobs.output import OutputFolder
from appliance.jobs.readers import InputSource, open_input
from appliance.jobs.tables import output_table, rejects_table
from appliance.repository import ModelVersion
from appliance.system.threadsched import yield_to_live_work
from modelrepo import MANIFEST_NAME, sha256_file

log = logging.getLogger("appliance.jobs")


class JobFailed(RuntimeError):
    """The job stopped (strict mode met a bad row, the version changed...); what was committed stays."""


@dataclass(frozen=True)
class JobSpec:
    model: str
    version: str | None
    input: Path
    output: Path
    input_columns: tuple[str, ...] = ()
    batch_size: int = 0  # 0: the model's max_batch_size
    chunk_rows: int = 8192
    resume: bool = False
    strict: bool = False
    allow_nan: bool = False
    top_k: int = 0
    in_flight: int = 2


@dataclass
class JobStatus:
    """What GET /v2/jobs/{id}, the status page and the progress bar show."""

    id: str
    model: str
    principal: str
    state: str = "pending"  # pending → running → done | failed | cancelled
    version: str = ""
    rows_done: int = 0
    rows_total: int | None = None
    rows_rejected: int = 0
    rows_per_s: float = 0.0
    eta_s: float | None = None
    error: str = ""
    started: float = field(default_factory=time.monotonic)

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "model": self.model, "version": self.version, "state": self.state,
                "principal": self.principal, "rows_done": self.rows_done, "rows_total": self.rows_total,
                "rows_rejected": self.rows_rejected, "rows_per_s": round(self.rows_per_s, 1),
                "eta_s": None if self.eta_s is None else round(self.eta_s, 1), "error": self.error,
                "elapsed_s": round(time.monotonic() - self.started, 1)}


@dataclass
class _Chunk:
    rows: int  # input rows consumed (kept + rejected)
    row_ids: np.ndarray  # ids of the kept rows
    tensors: dict[str, np.ndarray]
    rejects: list[tuple[int, str]]  # (row id, reason)


_END = None


class JobRunner:
    def __init__(self, service: InferenceService, spec: JobSpec, status: JobStatus,
                 on_progress: Callable[[JobStatus], None] | None = None) -> None:
        self.service = service
        self.spec = spec
        self.status = status
        self.on_progress = on_progress
        self.target: ModelVersion | None = None
        self.folder: OutputFolder | None = None
        self._stop = threading.Event()
        self._live_seen = False  # the last request was told to pause: live requests are being answered
        self._commit_s = 0.0  # how long the last commit took
        # Three threads of its own (waiting for chunks, digesting, committing) rather than the loop's
        # shared pool: each thread that touches chunk-sized buffers keeps allocator caches, and a
        # job's memory should not grow with the threads it happened to land on.
        self._threads = ThreadPoolExecutor(3, thread_name_prefix="job", initializer=yield_to_live_work)

    async def run(self) -> JobStatus:
        """Run to the end; the status says how it ended (an exception is re-raised after)."""
        status = self.status
        status.state = "running"
        try:
            await self._run()
            status.state = "done"
        except asyncio.CancelledError:
            status.state = "cancelled"
            raise
        except Exception as exc:
            status.state, status.error = "failed", f"{type(exc).__name__}: {exc}"
            raise
        finally:
            self._stop.set()
            self._threads.shutdown(wait=False)
        return status

    async def _run(self) -> None:
        spec, status = self.spec, self.status
        target = self.target = self.service.repository.resolve(spec.model, spec.version)
        status.version = str(target.version)
        plan = input_plan(target)
        source = await asyncio.to_thread(open_input, spec.input, next(iter(plan)))
        bindings = bind_inputs(plan, source.schema, spec.input_columns)
        folder = self.folder = await asyncio.to_thread(OutputFolder.open, spec.output, self.identity(target),
                                                       spec.resume)
        progress = folder.journal.progress
        status.rows_total, status.rows_done = source.total_rows, progress.rows_done
        status.rows_rejected = progress.rows_rejected
        if progress.done:
            return
        batch_size = min(spec.batch_size or target.config.max_batch_size, target.config.max_batch_size)
        if batch_size <= 0:
            raise JobFailed(f"model '{target.name}' takes no batches (max_batch_size 0): batch jobs need one")
        chunks: queue.Queue[_Chunk | BaseException | None] = queue.Queue(maxsize=2)
        # A chunk holds at least 8 requests: per-chunk costs (a commit's fsyncs) stay small beside
        # inference when the model takes large batches (measured: 342k rows/s at 8192 rows per
        # chunk, 522k at 65536, batch 4096).
        chunk_rows = max(spec.chunk_rows, 8 * batch_size)
        reader = threading.Thread(target=self._read, args=(source, bindings, plan, progress.rows_done, chunk_rows,
                                                           chunks),
                                  name="job-reader", daemon=True)
        reader.start()
        await self._pipeline(chunks, folder, batch_size)
        await asyncio.to_thread(folder.finish)

    def identity(self, target: ModelVersion) -> dict[str, Any]:
        """What a resumed job must agree on: the same rows, the same model, the same outputs."""
        spec = self.spec
        return {"model": target.name, "version": target.version,
                "manifest_sha256": sha256_file(target.path / MANIFEST_NAME),
                "input": str(spec.input.resolve()), "input_columns": list(spec.input_columns),
                "allow_nan": spec.allow_nan, "top_k": spec.top_k}

    async def _pipeline(self, chunks: queue.Queue[_Chunk | BaseException | None], folder: OutputFolder,
                        batch_size: int) -> None:
        started_rows, started = self.status.rows_done, time.monotonic()
        committing: asyncio.Future[None] | None = None
        loop = asyncio.get_running_loop()
        try:
            while True:
                chunk = await loop.run_in_executor(self._threads, self._next, chunks)
                if chunk is _END:
                    break
                if isinstance(chunk, BaseException):
                    raise chunk
                if chunk.rejects and self.spec.strict:
                    row, reason = chunk.rejects[0]
                    raise JobFailed(f"row {row}: {reason} (--strict)")
                # The input digest is taken while the chunk is in inference (hashlib lets go of the
                # GIL): in the commit thread it made that thread the job's bottleneck (0.69 of 0.75 s
                # for 1M rows of the bundled model at batch 4096, 0.21 s of it the digests).
                digesting = loop.run_in_executor(self._threads, tensor_digest, chunk.tensors)
                outputs = await self._infer(chunk, batch_size)  # (one dict per request, joined in _commit)
                input_digest = await digesting
                if committing is not None:
                    await committing
                    if self._live_seen and self._commit_s:
                        # Live requests are being answered: their audit records wait for an fsync
                        # that queues behind this job's commit on the same file system, so the
                        # job's commits are paced like its requests (live p99 with a job: see
                        # docs/benchmarks.md, "Batch prediction").
                        await asyncio.sleep(self.service.settings.jobs.live_pace * self._commit_s)
                committing = loop.run_in_executor(self._threads, self._commit, folder, chunk, outputs, input_digest)
                committing.add_done_callback(lambda _f: self._progress(started_rows, started))
            if committing is not None:
                await committing
        finally:
            self._stop.set()
            if committing is not None and not committing.done():
                await asyncio.shield(committing)  # a commit under way finishes: the journal stays true

    async def _infer(self, chunk: _Chunk, batch_size: int) -> list[dict[str, np.ndarray]]:
        """Every kept row of the chunk through the service, ``in_flight`` requests at a time.

        ``in_flight`` workers share the slices instead of one task per slice: creating a chunk's
        128 tasks at once held the event loop for milliseconds, which live requests waited out.
        """
        starts = range(0, len(chunk.row_ids), batch_size)
        parts: list[dict[str, np.ndarray]] = [{} for _ in starts]
        pending = iter(enumerate(starts))

        async def worker() -> None:
            for index, start in pending:  # one iterator shared by the workers
                parts[index] = await self._one(chunk, start, batch_size)

        await asyncio.gather(*(worker() for _ in range(max(1, self.spec.in_flight))))
        return parts

    async def _one(self, chunk: _Chunk, start: int, batch_size: int) -> dict[str, np.ndarray]:
        assert self.target is not None
        inputs = [InferInput(name, from_numpy(array.dtype), (len(rows), *array.shape[1:]), rows)
                  for name, array in chunk.tensors.items() for rows in (array[start:start + batch_size],)]
        ctx = RequestContext(request_id=f"{self.status.id}:{chunk.row_ids[start]}", principal=self.status.principal,
                             protocol="batch", operation=f"batch job {self.status.id}", use_cache=False,
                             background=True)
        response = await self.service.infer(ctx, self.spec.model, str(self.target.version), InferRequest(inputs))
        self._live_seen = ctx.pause_s > 0
        if ctx.pause_s:
            await asyncio.sleep(ctx.pause_s)  # live traffic is being served: leave it the CPU
        return response.outputs

    def _commit(self, folder: OutputFolder, chunk: _Chunk, parts: list[dict[str, np.ndarray]],
                input_digest: str) -> None:
        """In the job's commit thread: join the chunk's outputs, build its tables, make it durable."""
        assert self.target is not None
        target, started = self.target, time.monotonic()
        outputs = {name: np.concatenate([p[name] for p in parts]) for name in parts[0]} if parts else {}
        table = output_table(chunk.row_ids, outputs, target.name, str(target.version),
                             target.config.labels, self.spec.top_k)
        folder.commit(table, rejects_table(chunk.rejects), chunk.rows, input_digest,
                      tensor_digest(outputs) if outputs else "")
        self._commit_s = time.monotonic() - started

    def _progress(self, started_rows: int, started: float) -> None:
        assert self.folder is not None
        status, progress = self.status, self.folder.journal.progress
        status.rows_done, status.rows_rejected = progress.rows_done, progress.rows_rejected
        elapsed = time.monotonic() - started
        status.rows_per_s = (status.rows_done - started_rows) / elapsed if elapsed > 0 else 0.0
        if status.rows_total is not None and status.rows_per_s > 0:
            status.eta_s = max(0.0, (status.rows_total - status.rows_done) / status.rows_per_s)
        if self.on_progress is not None:
            self.on_progress(status)

    def _next(self, chunks: queue.Queue[_Chunk | BaseException | None]) -> _Chunk | BaseException | None:
        """The next prepared chunk; gives up once the job stops (no thread left blocked on get)."""
        while not self._stop.is_set():
            try:
                return chunks.get(timeout=0.1)
            except queue.Empty:
                continue
        return _END

    def _read(self, source: InputSource, bindings: list[Binding], plan: dict[str, InputPlan], skip: int,
              chunk_rows: int, out: queue.Queue[_Chunk | BaseException | None]) -> None:
        """The reader thread: lets the event loop keep its core (SCHED_BATCH; SCHED_IDLE was tried:
        a thread that holds the GIL and gets no core stalled the loop for 0.6 s) and stops when told."""
        yield_to_live_work()
        try:
            for chunk in _chunks(source, bindings, plan, skip, chunk_rows, self.spec.allow_nan):
                while not self._stop.is_set():
                    try:
                        out.put(chunk, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if self._stop.is_set():
                    return
            out.put(_END)
        except Exception as exc:
            out.put(exc)

    def audit_record(self) -> AuditRecord:
        """The one audit record of a job: who, which version, how many rows, digests of it all."""
        status, spec = self.status, self.spec
        progress = self.folder.journal.progress if self.folder is not None else None
        manifest = self.folder.journal.identity["manifest_sha256"] if self.folder is not None else ""
        code = {"done": 200, "cancelled": 499}.get(status.state, 500)
        return AuditRecord(
            "batch_job", request_id=status.id, principal=status.principal, model=status.model,
            version=status.version, status=code, latency_ms=(time.monotonic() - status.started) * 1000,
            input_sha256=progress.input_sha256 if progress else "",
            output_sha256=progress.output_sha256 if progress else "",
            summary={"state": status.state, "rows": status.rows_done, "rows_rejected": status.rows_rejected,
                     "manifest_sha256": manifest, "chunks": progress.chunks if progress else 0},
            detail=f"{spec.input} -> {spec.output}" + (f": {status.error}" if status.error else ""))


def _chunks(source: InputSource, bindings: list[Binding], plan: dict[str, InputPlan], skip: int,
            chunk_rows: int, allow_nan: bool) -> Iterator[_Chunk]:
    """Batches of about ``chunk_rows`` input rows, converted, with row ids continuing from ``skip``."""
    columns = sorted({c for b in bindings for c in b.columns})
    pending: list[pa.RecordBatch] = []
    pending_rows, next_id = 0, skip
    for batch in source.batches(chunk_rows, skip, columns):
        pending.append(batch)
        pending_rows += batch.num_rows
        if pending_rows >= chunk_rows:
            yield _convert(pending, bindings, plan, next_id, allow_nan)
            next_id += pending_rows
            pending, pending_rows = [], 0
    if pending:
        yield _convert(pending, bindings, plan, next_id, allow_nan)


def _convert(batches: list[pa.RecordBatch], bindings: list[Binding], plan: dict[str, InputPlan],
             first_id: int, allow_nan: bool) -> _Chunk:
    batch = batches[0] if len(batches) == 1 else pa.Table.from_batches(batches).combine_chunks().to_batches()[0]
    converted = convert(batch, bindings, plan, allow_nan)
    ids = np.arange(first_id, first_id + batch.num_rows, dtype=np.int64)
    rejects = [(first_id + offset, reason) for offset, reason in converted.reasons]
    return _Chunk(batch.num_rows, ids[converted.ok], converted.tensors, rejects)

