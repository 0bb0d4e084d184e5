"""The model repository on disk → versions loaded in a runtime, each with a state.

A version is loaded only if every file matches the SHA-256 in its manifest; otherwise it stays
``UNAVAILABLE`` with the reason logged and shown in metadata, and the other versions keep
serving. Loading runs off the event loop (the caller uses a thread).
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from appliance.config import Settings
from appliance.errors import ModelNotFound, ModelNotReady
from appliance.modelconfig import ModelConfig, ModelConfigError, load_model_config
from appliance.runtimes import CompiledModel, RuntimeLoadError, load_model
from modelrepo import Manifest, ManifestError, list_versions, read_manifest, verify_files

log = logging.getLogger("appliance.repository")

#: Reads a version's artifact into memory (e.g. decrypting it); returns (model bytes, weights bytes).
ArtifactReader = Callable[[Path, Manifest], tuple[bytes, bytes | None] | None]


class VersionState(enum.StrEnum):
    LOADING = "LOADING"
    READY = "READY"
    UNAVAILABLE = "UNAVAILABLE"
    UNLOADED = "UNLOADED"


@dataclass(eq=False)
class ModelVersion:
    """One version of one model, as the server sees it."""

    name: str
    version: int
    path: Path
    config: ModelConfig
    state: VersionState = VersionState.LOADING
    reason: str = ""
    manifest: Manifest | None = None
    compiled: CompiledModel | None = None
    loaded_at: float = 0.0
    load_seconds: float = 0.0

    @property
    def ready(self) -> bool:
        return self.state is VersionState.READY

    @property
    def key(self) -> str:
        return f"{self.name}/{self.version}"


@dataclass
class ModelEntry:
    name: str
    config: ModelConfig | None
    versions: dict[int, ModelVersion] = field(default_factory=dict)
    error: str = ""

    def latest_ready(self) -> ModelVersion | None:
        for number in sorted(self.versions, reverse=True):
            if self.versions[number].ready:
                return self.versions[number]
        return None


class Repository:
    def __init__(self, settings: Settings, artifact_reader: ArtifactReader | None = None) -> None:
        self.root = settings.server.models
        self._settings = settings
        self._reader = artifact_reader
        self._models: dict[str, ModelEntry] = {}
        self._lock = threading.Lock()

    # --- discovery and loading (blocking: run in a thread) -------------------------------
    def load_all(self) -> None:
        """Scan the repository and load every version the models' version policies select."""
        if not self.root.is_dir():
            log.error("model repository %s does not exist", self.root)
            return
        for model_dir in sorted(p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            self.load_model_dir(model_dir)

    def load_one(self, name: str) -> ModelEntry:
        """Load one model by name (a batch job needs only its own model, not the repository)."""
        model_dir = self.root / name
        if not name or name != model_dir.name or name.startswith(".") or not model_dir.is_dir():
            raise ModelNotFound(f"unknown model '{name}'")
        return self.load_model_dir(model_dir)

    def load_model_dir(self, model_dir: Path) -> ModelEntry:
        name = model_dir.name
        try:
            config = load_model_config(model_dir)
        except ModelConfigError as exc:
            log.error("model refused", extra={"fields": {"model": name, "reason": str(exc)}})
            entry = ModelEntry(name, None, error=str(exc))
            with self._lock:
                self._models[name] = entry
            return entry
        entry = ModelEntry(name, config)
        selected = config.version_policy.select(list_versions(model_dir))
        for number in selected:
            entry.versions[number] = ModelVersion(name, number, model_dir / str(number), config)
        with self._lock:
            self._models[name] = entry
        for version in entry.versions.values():
            self._load_version(version)
        return entry

    def _load_version(self, version: ModelVersion) -> None:
        started = time.monotonic()
        try:
            manifest = read_manifest(version.path)
            problems = verify_files(version.path, manifest)
            if problems:
                raise ManifestError("integrity check failed: " + "; ".join(problems))
            version.manifest = manifest
            version.compiled = self._compile(version, manifest)
        except (ManifestError, RuntimeLoadError, OSError, ValueError) as exc:
            version.state = VersionState.UNAVAILABLE
            version.reason = str(exc)
            log.error("model refused", extra={"fields": {
                "model": version.name, "version": version.version, "reason": str(exc)}})
            return
        version.load_seconds = time.monotonic() - started
        version.loaded_at = time.time()
        version.state = VersionState.READY
        log.info("model loaded", extra={"fields": {
            "model": version.name, "version": version.version, "runtime": version.compiled.runtime,
            "device": version.compiled.device, "precision": manifest.precision, "format": manifest.format,
            "load_seconds": round(version.load_seconds, 3)}})

    def _compile(self, version: ModelVersion, manifest: Manifest) -> CompiledModel:
        runtime = self._settings.runtime
        loaded = self._reader(version.path, manifest) if self._reader else None
        model_bytes, weights = loaded if loaded else (None, None)
        # A model read from memory (decrypted) must not leave a compiled blob on disk.
        cache_dir = (self._settings.server.state_dir / "ov-cache"
                     if runtime.compiled_cache and loaded is None else None)
        compiled = load_model(
            version.path / manifest.model_file, artifact_format=manifest.format,
            precision=manifest.precision, runtime=version.config.runtime,
            device=version.config.device or runtime.device, performance_hint=runtime.performance_hint,
            nireq=runtime.nireq, threads=runtime.threads, cache_dir=cache_dir,
            model_bytes=model_bytes, weights=weights,
            extra_config=manifest.optimizer.get("runtime_config") or None,
        )
        _check_declared_tensors(version.config, compiled)
        return compiled

    def close(self) -> None:
        with self._lock:
            versions = [v for e in self._models.values() for v in e.versions.values()]
        for version in versions:
            if version.compiled is not None:
                version.compiled.close()
            version.state = VersionState.UNLOADED
            log.info("model unloaded", extra={"fields": {"model": version.name, "version": version.version}})

    # --- lookups (event loop; cheap) -----------------------------------------------------
    def models(self) -> list[ModelEntry]:
        with self._lock:
            return list(self._models.values())

    def entry(self, name: str) -> ModelEntry:
        entry = self._models.get(name)
        if entry is None:
            raise ModelNotFound(f"unknown model '{name}'")
        return entry

    def resolve(self, name: str, version: str | None = None) -> ModelVersion:
        """The version a request addresses: explicit, or the newest ready one."""
        entry = self.entry(name)
        if not version:
            latest = entry.latest_ready()
            if latest is None:
                raise ModelNotReady(f"model '{name}' has no ready version"
                                    + (f": {entry.error}" if entry.error else ""))
            return latest
        if not version.isdigit():
            raise ModelNotFound(f"model '{name}' has no version '{version}'")
        found = entry.versions.get(int(version))
        if found is None:
            raise ModelNotFound(f"model '{name}' has no version '{version}'")
        if not found.ready:
            raise ModelNotReady(f"model '{name}' version {version} is not ready: {found.reason or found.state}")
        return found

    def all_ready(self) -> bool:
        """Every model has a ready version (what /v2/health/ready reports)."""
        entries = self.models()
        return bool(entries) and all(e.latest_ready() is not None for e in entries)


def _check_declared_tensors(config: ModelConfig, compiled: CompiledModel) -> None:
    """model.toml may declare tensors; they must exist in the artifact."""
    actual_in = {p.name for p in compiled.inputs}
    actual_out = {p.name for p in compiled.outputs}
    for spec in config.inputs:
        if spec.name not in actual_in:
            raise RuntimeLoadError(f"model.toml declares input '{spec.name}' the model lacks ({sorted(actual_in)})")
    for spec in config.outputs:
        if spec.name not in actual_out:
            raise RuntimeLoadError(f"model.toml declares output '{spec.name}' the model lacks ({sorted(actual_out)})")
