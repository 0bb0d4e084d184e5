"""Setting, promoting and rolling back rollouts, for the REST API, gRPC and the command line.

A change is written to the rollout file first (the source of truth every server process watches)
and then applied: the model is reloaded so that the rollout's versions are loaded (they are
pinned beside whatever the version policy selects), and every change is an audit record. The
file may also change under the server (``appliance rollout`` run by an operator, another worker):
``watch_forever`` notices within a second and reloads the models whose rollout changed.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from appliance.audit import AuditRecord, AuditSink
from appliance.errors import InvalidInput, ModelNotFound
from appliance.lifecycle.control import ModelControl
from appliance.lifecycle.rollout import Rollout, RolloutStore, Thresholds, parse_rollout
from appliance.lifecycle.router import Router
from appliance.repository import Repository
from modelrepo import list_versions

log = logging.getLogger("appliance.rollout")


def pins(store: RolloutStore) -> Any:
    """The repository's pins: an active rollout keeps both versions loaded, a finished one its stable."""
    def pinned(model: str) -> set[int]:
        rollout = store.get(model)
        if rollout is None:
            return set()
        return {rollout.stable, rollout.candidate} if rollout.active else {rollout.stable}
    return pinned


class RolloutControl:
    def __init__(self, store: RolloutStore, router: Router, models: ModelControl, repository: Repository,
                 audit_log: AuditSink) -> None:
        self.store = store
        self.router = router
        self._models = models
        self._repository = repository
        self._audit = audit_log
        self._saving: set[asyncio.Task[None]] = set()

    def show(self, model: str) -> dict[str, Any]:
        self._repository.entry(model)  # 404 for an unknown model
        rollout = self.router.rollout(model)
        stats = self.router.stats(model)
        return {"model": model, "rollout": rollout.to_dict() if rollout else None,
                "stats": stats.snapshot() if stats else None}

    async def put(self, model: str, doc: Any, principal: str) -> dict[str, Any]:
        """Start or change a rollout (a definition), or end the current one (``{"state": ...}``)."""
        entry = self._repository.entry(model)
        current = self.router.rollout(model)
        if isinstance(doc, dict) and set(doc) == {"state"}:
            rollout = self._finish(model, current, doc["state"], principal)
        else:
            defaults = Thresholds.parse(dict(entry.config.rollout)) if entry.config else None
            rollout = parse_rollout(model, doc, defaults).with_event("set", principal)
            missing = {rollout.stable, rollout.candidate} - set(list_versions(self._repository.root / model))
            if missing:
                raise InvalidInput(f"model '{model}' has no version(s) {sorted(missing)} in the repository")
        await asyncio.to_thread(self.store.put, rollout)
        self._record(rollout, principal)
        await self._models.load(model, principal)
        return self.show(model)

    async def remove(self, model: str, principal: str) -> None:
        self._repository.entry(model)
        await asyncio.to_thread(self.store.remove, model)
        self._audit.append_nowait(AuditRecord("rollout_remove", principal=principal, model=model, status=200))
        await self._models.load(model, principal)

    def _finish(self, model: str, current: Rollout | None, state: object, principal: str) -> Rollout:
        if current is None or not current.active:
            raise InvalidInput(f"model '{model}' has no active rollout")
        if state == "promoted":
            return current.with_event("promote", principal, state="promoted", stable=current.candidate,
                                      candidate=current.stable)
        if state == "rolled_back":
            return current.with_event("rollback", principal, "by the operator", state="rolled_back")
        raise InvalidInput("'state' must be 'promoted' or 'rolled_back'")

    def on_router_rollback(self, rolled: Rollout) -> None:
        """The router rolled a rollout back by itself: audit it and save it (off the event loop)."""
        self._record(rolled, "automatic")
        task = asyncio.get_running_loop().create_task(asyncio.to_thread(self.store.put, rolled))
        self._saving.add(task)
        task.add_done_callback(self._saving.discard)

    def _record(self, rollout: Rollout, principal: str) -> None:
        event = rollout.history[-1] if rollout.history else {}
        action = f"rollout_{event.get('action', 'set')}"
        self._audit.append_nowait(AuditRecord(
            action, principal=principal, model=rollout.model, version=str(rollout.candidate), status=200,
            detail=f"{rollout.mode} {rollout.share:g} stable {rollout.stable} candidate {rollout.candidate} "
                   f"state {rollout.state}" + (f": {event['why']}" if event.get("why") else "")))

    async def watch_forever(self, interval_s: float = 1.0) -> None:
        """Reload models whose rollout changed in the file (another process or the command line)."""
        seen = dict(self.store.all())
        while True:
            await asyncio.sleep(interval_s)
            now = dict(self.store.all())
            for model in sorted(set(now) | set(seen)):
                if now.get(model) is not seen.get(model):
                    try:
                        await self._models.load(model, "rollout-file", broadcast=False)  # every worker watches
                    except ModelNotFound:
                        log.warning("rollout for unknown model", extra={"fields": {"model": model}})
            seen = now

    async def aclose(self) -> None:
        await asyncio.gather(*self._saving, return_exceptions=True)
