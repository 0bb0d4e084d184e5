"""Lineage of one version: where it came from and what happened to it since.

The manifest carries the provenance (source hash, parent version, optimizer recipe and gate
result, calibration and evaluation data digests, measured metrics, who published it and when);
the rollout history adds when it was a candidate, promoted or rolled back and by whom.
"""

from __future__ import annotations

from typing import Any

from appliance.errors import ModelNotFound
from appliance.lifecycle.router import Router
from appliance.repository import Repository, manifest_digest
from modelrepo import ManifestError, list_versions, read_manifest


def lineage(repository: Repository, router: Router, model: str, version: int) -> dict[str, Any]:
    entry = repository.entry(model)
    path = repository.root / model / str(version)
    if version not in list_versions(repository.root / model):
        raise ModelNotFound(f"model '{model}' has no version '{version}'")
    loaded = entry.versions.get(version)
    try:
        manifest: dict[str, Any] | None = read_manifest(path).to_dict()
    except ManifestError as exc:
        manifest = None
        reason = str(exc)
    else:
        reason = loaded.reason if loaded else ""
    rollout = router.rollout(model)
    history = [event for event in (rollout.history if rollout else ())
               if rollout is not None and version in (rollout.stable, rollout.candidate)]
    return {
        "model": model, "version": str(version),
        "state": str(loaded.state) if loaded else "UNLOADED", "reason": reason,
        "manifest_sha256": loaded.manifest_sha256 if loaded else manifest_digest(path),
        "parent_version": manifest.get("parent_version") if manifest else None,
        "manifest": manifest,
        "rollout": {"role": _role(rollout, version), "history": history} if rollout else None,
    }


def _role(rollout: Any, version: int) -> str:
    if version == rollout.stable:
        return "stable"
    return "candidate" if version == rollout.candidate else ""
