"""``build_parts(settings)``: the one place the protocol-free parts are assembled.

The REST application, the gRPC server, batch jobs, the benches and the tests all start from the
same ``Parts``: the audit log is opened first (a missing or wrong key stops start-up with
``AuditKeyError``) and handed to the service as it is built, so nothing is wired late.
``start()`` loads the models in a thread (liveness answers at once; readiness turns true when they
are compiled) and starts the background samplers; ``aclose()`` undoes it in reverse order, the
audit log last, so every answered request is on disk.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import time
from dataclasses import dataclass, field

import orjson

from appliance import __version__
from appliance.artifacts import SealedArtifactReader
from appliance.audit import AuditRecord, AuditSink, open_audit_log, upkeep
from appliance.audit.requests import InferenceAuditor
from appliance.auth.guard import Guard
from appliance.config import Settings
from appliance.dataplane.cache import PredictionCache
from appliance.dataplane.service import InferenceService
from appliance.jobs.manager import JobManager
from appliance.lifecycle.control import ModelControl
from appliance.lifecycle.rollout import Rollout, RolloutStore
from appliance.lifecycle.rollout_control import RolloutControl, pins
from appliance.lifecycle.router import Router
from appliance.metrics import Metrics
from appliance.observability import Observability
from appliance.observability.collectors import ScrapeCollector
from appliance.observability.rollouts import RolloutCollector
from appliance.processes.jobslots import JobSlots
from appliance.processes.peers import Peers
from appliance.processes.supervisor import WorkerIdentity
from appliance.repository import Repository

log = logging.getLogger("appliance")


@dataclass
class ServerState:
    started: float = field(default_factory=time.monotonic)
    started_wall: float = field(default_factory=time.time)
    ready: bool = False


@dataclass
class Parts:
    settings: Settings
    state: ServerState
    metrics: Metrics
    repository: Repository
    audit_log: AuditSink
    auditor: InferenceAuditor | None
    service: InferenceService
    guard: Guard
    observability: Observability
    models: ModelControl
    rollouts: RolloutControl
    jobs: JobManager
    #: In a multi-worker server: which worker this is, and how it reaches the others.
    worker: WorkerIdentity | None = None
    peers: Peers | None = None
    _loading: asyncio.Task[None] | None = None
    _polling: asyncio.Task[None] | None = None
    _watching: asyncio.Task[None] | None = None
    _upkeep: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Begin loading the models and sampling; returns at once (readiness follows the load)."""
        self.audit_log.append_nowait(AuditRecord(
            "server_start", status=200,
            detail=f"model-appliance {__version__}; config sha256 {settings_digest(self.settings)}"))
        if self.worker is None:  # with workers, the audit writer process runs retention and capacity checks
            self._upkeep = await upkeep.start(self.settings, self.audit_log)  # in a thread
        self.observability.start(self.metrics, self.service)
        self._loading = asyncio.create_task(self._load())

    async def loaded(self) -> None:
        """Wait until the first load of the repository is done (``start`` began it)."""
        if self._loading is not None:
            await asyncio.shield(self._loading)

    async def _load(self) -> None:
        # A restarted worker: what an operator unloaded stays unloaded.
        unloaded = self.peers.unloaded.names() if self.peers is not None else set()
        await asyncio.to_thread(self.repository.load_all, unloaded)
        self._audit_models("model_load")
        self.state.ready = True
        if self.worker is not None:
            self.worker.ready_path().touch()
        log.info("ready", extra={"fields": {"models": [e.name for e in self.repository.models()]}})
        interval = self.settings.server.models_poll_interval_s
        if interval > 0:
            self._polling = asyncio.create_task(self.models.poll_forever(interval))
        self._watching = asyncio.create_task(self.rollouts.watch_forever())

    async def aclose(self) -> None:
        for task in (self._polling, self._watching):
            if task is not None:
                task.cancel()
        # The initial load runs in a thread that cannot be cancelled: let it finish first.
        await asyncio.gather(*(t for t in (self._loading, self._polling, self._watching) if t is not None),
                             return_exceptions=True)
        await self.jobs.aclose()  # running jobs stop at a committed chunk (resumable) and are audited
        await self.rollouts.aclose()
        await self.models.aclose()
        await self.observability.stop()
        if self.peers is not None:
            await self.peers.aclose()
        await asyncio.to_thread(self.repository.close)
        self._audit_models("model_unload")
        await upkeep.stop(self._upkeep)
        if self.auditor is not None:
            self.auditor.flush_overloads()
        self.audit_log.append_nowait(AuditRecord("server_stop", status=200))
        await self.audit_log.aclose()

    def _audit_models(self, action: str) -> None:
        for entry in self.repository.models():
            for number, version in entry.versions.items():
                self.audit_log.append_nowait(AuditRecord(
                    action=action, model=entry.name, version=str(number), status=200 if version.ready else 503,
                    device=version.compiled.device if version.compiled else "", detail=version.reason,
                    latency_ms=version.load_seconds * 1000 if action == "model_load" else 0.0))


def build_parts(settings: Settings, worker: WorkerIdentity | None = None) -> Parts:
    """Assemble every protocol-free part; opens the audit log (may raise ``AuditError``).
    ``worker``: this process is one worker of several (its audit log is the writer process's)."""
    settings.server.state_dir.mkdir(parents=True, exist_ok=True)
    audit_log = open_audit_log(settings, writer_socket=worker.audit_socket if worker is not None else None)
    metrics = Metrics()
    state = ServerState()
    store = RolloutStore(settings.server.state_dir / "rollouts.json")
    repository = Repository(settings, artifact_reader=SealedArtifactReader(settings), pins=pins(store))
    observability = Observability.create(settings)
    service: InferenceService | None = None
    auditor = None
    if settings.audit.enabled:
        auditor = InferenceAuditor(audit_log, lambda: service.active if service is not None else 0)
    observers = [observability.quality.observe] if settings.observability.prediction_quality else []
    rollouts: RolloutControl | None = None

    def rolled_back(rollout: Rollout) -> None:
        if rollouts is not None:
            rollouts.on_router_rollback(rollout)

    router = Router(store, on_event=rolled_back)
    service = InferenceService(settings, repository, metrics,
                               PredictionCache(settings.cache.max_bytes, settings.cache.ttl_s),
                               audit=auditor, observers=observers, router=router)
    models = ModelControl(settings, repository, service, audit_log)
    rollouts = RolloutControl(store, router, models, repository, audit_log)
    metrics.registry.register(ScrapeCollector(service, repository, lambda: audit_log, lambda: state.ready))
    metrics.registry.register(observability.quality)
    metrics.registry.register(RolloutCollector(router))
    jobs = JobManager(settings, service, audit_log)
    peers = None
    if worker is not None:
        peers = Peers(worker)
        models.peers = peers.models_changed
        jobs.slots = JobSlots(worker.run_dir, settings.jobs.max_running)
    return Parts(settings, state, metrics, repository, audit_log, auditor, service,
                 Guard(settings, share=settings.server.limit_share),
                 observability, models, rollouts, jobs, worker, peers)


def settings_digest(settings: Settings) -> str:
    """SHA-256 of the effective settings (paths and limits only: secrets live in key files)."""
    return hashlib.sha256(orjson.dumps(dataclasses.asdict(settings), default=str,
                                       option=orjson.OPT_SORT_KEYS)).hexdigest()
