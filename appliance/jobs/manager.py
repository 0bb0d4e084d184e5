"""The server's batch jobs: submitted over the API, run beside live traffic, listed, cancelled.

Paths in a submission are relative to ``jobs.data_dir`` and must stay inside it once resolved
(``..``, absolute paths and symlinks pointing out are refused), so an API client can read and write
only what the operator put there. At most ``jobs.max_running`` jobs run at once; the others wait
in ``pending``. Each job ends with one ``batch_job`` audit record. A cancelled or failed job keeps
what it committed: submitting it again with ``"resume": true`` continues it.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from appliance.audit import AuditSink
from appliance.config import Settings
from appliance.dataplane.service import InferenceService
from appliance.errors import InvalidInput, JobNotFound

if TYPE_CHECKING:
    from appliance.jobs.runner import JobRunner, JobSpec, JobStatus
    from appliance.processes.jobslots import JobSlots

#: While every server-wide job slot is taken (another worker's jobs), look again this often.
SLOT_RETRY_S = 0.5

log = logging.getLogger("appliance.jobs")

_KEYS = {"model", "version", "input", "output", "input_columns", "batch_size", "top_k", "resume", "strict",
         "allow_nan"}
_FINISHED = ("done", "failed", "cancelled")


@dataclass
class _Job:
    status: JobStatus
    runner: JobRunner
    task: asyncio.Task[None] | None = None
    slot: int | None = None  # the server-wide slot it holds while it runs (several workers)


class JobManager:
    def __init__(self, settings: Settings, service: InferenceService, audit_log: AuditSink) -> None:
        self.settings = settings
        self.service = service
        self.audit_log = audit_log
        self._jobs: dict[str, _Job] = {}
        self._waiting: deque[_Job] = deque()  # submitted, not started: max_running are running
        self._active = 0
        #: Several workers: max_running holds for the server through shared slots (set by build_parts).
        self.slots: JobSlots | None = None
        self._retry: asyncio.TimerHandle | None = None

    @property
    def enabled(self) -> bool:
        return self.settings.jobs.data_dir is not None

    def submit(self, principal: str, body: dict[str, Any]) -> JobStatus:
        """Validate a submission and start it (or queue it); InvalidInput says what is wrong."""
        from appliance.jobs.runner import JobRunner, JobStatus  # pyarrow: ~60 MiB a server without jobs never maps

        spec = self.spec_from(body)
        status = JobStatus(uuid.uuid4().hex[:12], spec.model, principal)
        job = self._jobs[status.id] = _Job(status, JobRunner(self.service, spec, status))
        self._waiting.append(job)
        self._start_next()
        log.info("job submitted", extra={"fields": {"job": status.id, "model": spec.model, "principal": principal}})
        return status

    def spec_from(self, body: dict[str, Any]) -> JobSpec:
        unknown = set(body) - _KEYS
        if unknown:
            raise InvalidInput(f"unknown job field(s): {', '.join(sorted(unknown))}")
        model, version = body.get("model"), body.get("version")
        if not isinstance(model, str) or not model:
            raise InvalidInput("'model' (a model name) is required")
        columns = body.get("input_columns", [])
        if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
            raise InvalidInput("'input_columns' must be a list of column names")
        jobs = self.settings.jobs
        from appliance.jobs.runner import JobSpec

        return JobSpec(model, None if version in (None, "") else str(version),
                       self.confine(body.get("input"), "input", must_exist=True),
                       self.confine(body.get("output"), "output", must_exist=False), tuple(columns),
                       _int(body, "batch_size"), jobs.chunk_rows, _bool(body, "resume"), _bool(body, "strict"),
                       _bool(body, "allow_nan"), _int(body, "top_k"), jobs.in_flight)

    def confine(self, raw: Any, field: str, must_exist: bool) -> Path:
        """``raw`` resolved inside ``jobs.data_dir`` (symlinks followed), or InvalidInput."""
        root = self.settings.jobs.data_dir
        if root is None:
            raise JobNotFound("the jobs API is off: the operator has not set jobs.data_dir")
        if not isinstance(raw, str) or not raw or Path(raw).is_absolute() or "\0" in raw:
            raise InvalidInput(f"'{field}' must be a path relative to the jobs data folder")
        base = root.resolve()
        path = (base / raw).resolve()
        if path == base or not path.is_relative_to(base):
            raise InvalidInput(f"'{field}' leaves the jobs data folder")
        if must_exist and not path.exists():
            raise InvalidInput(f"'{field}' {raw!r} does not exist in the jobs data folder")
        return path

    def _start_next(self) -> None:
        """Start waiting jobs, oldest first, while fewer than ``jobs.max_running`` run (in the whole
        server when ``slots`` is set: then a job waits for a slot another worker may hold)."""
        self._retry = None
        while self._waiting and self._active < max(1, self.settings.jobs.max_running):
            slot = None
            if self.slots is not None:
                slot = self.slots.try_take()
                if slot is None:
                    self._retry = asyncio.get_running_loop().call_later(SLOT_RETRY_S, self._start_next)
                    return
            job = self._waiting.popleft()
            job.slot = slot
            self._active += 1
            job.task = asyncio.create_task(self._run(job), name=f"job-{job.status.id}")

    async def _run(self, job: _Job) -> None:
        try:
            await job.runner.run()
        except asyncio.CancelledError:
            job.status.state = "cancelled"
        except Exception as exc:  # the status carries the reason; the server carries on
            log.warning("job failed", extra={"fields": {"job": job.status.id, "error": str(exc)}})
        finally:
            self._active -= 1
            if job.slot is not None and self.slots is not None:
                self.slots.release(job.slot)
                job.slot = None
            if self._retry is None:
                self._start_next()
            if job.runner.target is not None:
                self.audit_log.append_nowait(job.runner.audit_record())
            log.info("job ended", extra={"fields": {"job": job.status.id, "state": job.status.state,
                                                    "rows": job.status.rows_done}})

    def get(self, job_id: str, principal: str, see_all: bool) -> JobStatus:
        job = self._jobs.get(job_id)
        if job is None or not (see_all or job.status.principal == principal):
            raise JobNotFound(f"no job '{job_id}'")
        return job.status

    def list(self, principal: str | None = None) -> list[JobStatus]:
        """Every job (``principal`` None), or the ones ``principal`` submitted; newest first."""
        found = [j.status for j in self._jobs.values() if principal is None or j.status.principal == principal]
        return sorted(found, key=lambda s: s.started, reverse=True)

    async def cancel(self, job_id: str, principal: str, see_all: bool) -> JobStatus:
        status = self.get(job_id, principal, see_all)
        job = self._jobs[job_id]
        if job in self._waiting:
            self._waiting.remove(job)
            status.state = "cancelled"
        if job.task is not None and not job.task.done():
            job.task.cancel()
            await asyncio.gather(job.task, return_exceptions=True)
        return status

    async def aclose(self) -> None:
        """Cancel the running jobs (they stay resumable) and wait for their last commit."""
        if self._retry is not None:
            self._retry.cancel()
        for job in self._waiting:
            job.status.state = "cancelled"
        self._waiting.clear()
        tasks = [j.task for j in self._jobs.values() if j.task is not None and not j.task.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _int(body: dict[str, Any], key: str) -> int:
    value = body.get(key, 0)
    if type(value) is not int or value < 0:
        raise InvalidInput(f"'{key}' must be a non-negative integer")
    return value


def _bool(body: dict[str, Any], key: str) -> bool:
    value = body.get(key, False)
    if not isinstance(value, bool):
        raise InvalidInput(f"'{key}' must be true or false")
    return value
