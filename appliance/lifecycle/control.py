"""Live model control: Triton's repository extension (index, load, unload) for every front end.

A load re-reads the model's folder and ``model.toml`` in a thread, loads and warms up the newly
selected versions beside the serving ones, and swaps them in at once (``Repository.reload``); the
versions that stopped serving drain their in-flight requests and are closed in the background
(``InferenceService.retire``), so no request is refused or failed by a swap. Every load and
unload is an audit record carrying who asked. Calls for one model are serialised.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any

from appliance.audit import AuditRecord, AuditSink
from appliance.config import Settings
from appliance.dataplane.service import InferenceService
from appliance.repository import ModelVersion, Repository

log = logging.getLogger("appliance.lifecycle")
#: Passes a load or unload on to the server's other worker processes: (action, model, principal).
PeerNotifier = Callable[[str, str, str], Awaitable[None]]


class ModelControl:
    def __init__(self, settings: Settings, repository: Repository, service: InferenceService,
                 audit_log: AuditSink) -> None:
        self._settings = settings
        self._repository = repository
        self._service = service
        self._audit = audit_log
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._retiring: set[asyncio.Task[None]] = set()
        self.peers: PeerNotifier | None = None  # set in a multi-worker server

    def index(self, ready_only: bool = False) -> list[dict[str, Any]]:
        """Every model version the server knows and its state (Triton's RepositoryIndex)."""
        rows: list[dict[str, Any]] = []
        for entry in self._repository.models():
            if not entry.versions and not ready_only:
                rows.append({"name": entry.name, "version": "", "state": "UNAVAILABLE", "reason": entry.error})
            for number, version in sorted(entry.versions.items()):
                if version.ready or not ready_only:
                    rows.append({"name": entry.name, "version": str(number), "state": str(version.state),
                                 "reason": version.reason})
        return rows

    async def load(self, name: str, principal: str, *, broadcast: bool = True) -> list[ModelVersion]:
        """(Re)load ``name``; returns the versions loaded now. Raises ModelNotFound/ModelNotReady.
        ``broadcast``: also on the other workers (the call returns once they have applied it)."""
        async with self._locks[name]:
            result = await asyncio.to_thread(self._repository.reload, name)
            self._retire(result.retired)
        for version in result.loaded:
            self._record("model_load", principal, version)
        if not result.loaded:
            self._audit.append_nowait(AuditRecord("model_load", principal=principal, model=name, status=200,
                                                  detail="unchanged: every selected version already serves"))
        if broadcast and self.peers is not None:
            await self.peers("load", name, principal)
        return result.loaded

    async def unload(self, name: str, principal: str, *, broadcast: bool = True) -> None:
        async with self._locks[name]:
            retired = self._repository.unload(name)
            self._retire(retired)
        for version in retired:
            self._record("model_unload", principal, version)
        if broadcast and self.peers is not None:
            await self.peers("unload", name, principal)

    async def poll_forever(self, interval_s: float) -> None:
        """Load what changed in the repository (``server.models_poll_interval_s``). Versions are
        published by an atomic rename, so a scan never sees half a version."""
        seen = await asyncio.to_thread(self._repository.fingerprints)
        while True:
            await asyncio.sleep(interval_s)
            try:
                now = await asyncio.to_thread(self._repository.fingerprints)
                for name in sorted(now):
                    if now[name] != seen.get(name):
                        await self.load(name, "repository-poll", broadcast=False)  # every worker polls
                seen = now
            except Exception:  # a bad folder must not stop the poller; the load already logged why
                log.exception("repository poll failed")

    async def aclose(self) -> None:
        """Wait for the background retirements (shutdown)."""
        await asyncio.gather(*self._retiring, return_exceptions=True)

    def _retire(self, versions: list[ModelVersion]) -> None:
        if not versions:
            return
        task = asyncio.create_task(self._service.retire(versions, self._settings.server.drain_grace_s))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    def _record(self, action: str, principal: str, version: ModelVersion) -> None:
        log.info(action.replace("_", " "), extra={"fields": {"model": version.name, "version": version.version,
                                                              "state": str(version.state), "principal": principal}})
        self._audit.append_nowait(AuditRecord(
            action, principal=principal, model=version.name, version=str(version.version),
            status=200 if version.ready or action == "model_unload" else 503,
            device=version.compiled.device if version.compiled else "",
            detail=version.reason or f"manifest sha256 {version.manifest_sha256}",
            latency_ms=version.load_seconds * 1000 if action == "model_load" else 0.0))
