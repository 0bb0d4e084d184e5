"""The model repository on disk → versions loaded in a runtime, each with a state.

A version is loaded only if every file matches the SHA-256 in its manifest and a warm-up
inference succeeds; otherwise it stays ``UNAVAILABLE`` with the reason logged and shown in
metadata, and the other versions keep serving. Loading runs off the event loop (the caller uses
a thread).

The repository is live: :meth:`Repository.reload` re-reads one model's folder and ``model.toml``,
loads the versions its policy now selects *beside* the ones serving, and swaps the model's entry
in one assignment (readers on the event loop see the old entry or the new one, never a mix). The
versions it no longer serves are handed back to the caller, which lets their in-flight requests
finish before closing them. A new version that fails to load leaves the serving ones in place.
"""

from __future__ import annotations

import enum
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path

from appliance.config import Settings
from appliance.dataplane.processing import Processing, build_processing
from appliance.errors import ModelNotFound, ModelNotReady
from appliance.modelconfig import ModelConfig, ModelConfigError, load_model_config
from appliance.runtimes import CompiledModel, RuntimeLoadError, load_model
from appliance.runtimes.warmup import warm_up
from modelrepo import MANIFEST_NAME, Manifest, ManifestError, list_versions, read_manifest, verify_files
from modelrepo.manifest import is_servable

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
    manifest_sha256: str = ""  # of manifest.json as loaded: names the exact artifact (audit, lineage, jobs)
    #: False for a version whose manifest says ``"serve": false``: loaded, but only a request that
    #: names it reaches it (the optimizer found it no faster than the FP32 source on this host).
    serve: bool = True
    processing: Processing | None = None  # the steps the version declares (text/image in, labels out)

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
            if self.versions[number].ready and self.versions[number].serve:
                return self.versions[number]
        return None


@dataclass
class Reloaded:
    """What :meth:`Repository.reload` did: the entry now served and the versions it retired."""

    entry: ModelEntry
    retired: list[ModelVersion]
    loaded: list[ModelVersion]


#: Versions a model must keep loaded whatever its version policy says (a rollout's stable and candidate).
Pins = Callable[[str], set[int]]


class Repository:
    def __init__(self, settings: Settings, artifact_reader: ArtifactReader | None = None,
                 pins: Pins | None = None) -> None:
        self.root = settings.server.models
        self._settings = settings
        self._reader = artifact_reader
        self._pins = pins
        self._models: dict[str, ModelEntry] = {}
        self._lock = threading.Lock()

    # --- discovery and loading (blocking: run in a thread) -------------------------------
    def load_all(self, unloaded: Collection[str] = ()) -> None:
        """Scan the repository and load every version the models' version policies select.
        ``unloaded``: models an operator unloaded (a restarted worker of a running server): listed
        as unloaded, as ``unload`` leaves them, without loading them first."""
        if not self.root.is_dir():
            log.error("model repository %s does not exist", self.root)
            return
        for model_dir in sorted(p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            if model_dir.name in unloaded:
                try:
                    config: ModelConfig | None = load_model_config(model_dir)
                except ModelConfigError:
                    config = None
                self._set(ModelEntry(model_dir.name, config, error="unloaded"))
            else:
                self.load_model_dir(model_dir)

    def load_one(self, name: str) -> ModelEntry:
        """Load one model by name (a batch job needs only its own model, not the repository)."""
        model_dir = self.root / name
        if not name or name != model_dir.name or name.startswith(".") or not model_dir.is_dir():
            raise ModelNotFound(f"unknown model '{name}'")
        return self.load_model_dir(model_dir)

    def load_model_dir(self, model_dir: Path) -> ModelEntry:
        return self.reload(model_dir.name).entry

    # --- the live repository (blocking: run in a thread) ------------------------------------
    def reload(self, name: str) -> Reloaded:
        """Re-read ``<models>/<name>``; load what its policy selects now beside what serves; swap.

        Versions whose manifest and ``model.toml`` are unchanged keep serving as they are. If a
        newly selected version fails to load, the versions that served before stay in the entry.
        """
        model_dir = self.root / name
        if not model_dir.is_dir() or name.startswith("."):
            raise ModelNotFound(f"no model '{name}' in the repository")
        old = self._models.get(name)
        try:
            config = load_model_config(model_dir)
        except ModelConfigError as exc:
            log.error("model refused", extra={"fields": {"model": name, "reason": str(exc)}})
            if old is not None and old.latest_ready() is not None:
                raise ModelNotReady(f"model '{name}' not reloaded: {exc}") from None
            return Reloaded(self._set(ModelEntry(name, None, error=str(exc))), [], [])
        entry, loaded = ModelEntry(name, config), []
        selected = _selected(config, model_dir)
        pinned = self._pins(name) if self._pins is not None else set()
        for number in pinned & set(list_versions(model_dir)) - set(selected):
            selected[number] = is_servable(model_dir / str(number))
        for number, serve in sorted(selected.items()):
            current = old.versions.get(number) if old is not None else None
            if current is not None and current.ready and current.config == config \
                    and current.manifest_sha256 == manifest_digest(current.path) and current.serve == serve:
                entry.versions[number] = current
                continue
            version = ModelVersion(name, number, model_dir / str(number), config, serve=serve)
            self._load_version(version)
            entry.versions[number] = version
            loaded.append(version)
        if old is not None and any(not v.ready for v in loaded):
            for number, version in old.versions.items():  # a failed newcomer leaves the serving ones serving
                if version.ready:
                    entry.versions.setdefault(number, version)
        self._set(entry)
        kept = {id(v) for v in entry.versions.values()}
        retired = [v for v in (old.versions.values() if old else ()) if id(v) not in kept]
        return Reloaded(entry, retired, loaded)

    def fingerprints(self) -> dict[str, tuple[object, ...]]:
        """What the poller compares: per model folder, its model.toml and version folders' stamps."""
        out: dict[str, tuple[object, ...]] = {}
        if not self.root.is_dir():
            return out
        for model_dir in sorted(p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            toml = model_dir / "model.toml"
            stamp = toml.stat().st_mtime_ns if toml.exists() else 0
            out[model_dir.name] = (stamp, *((v, manifest_digest(model_dir / str(v)))
                                            for v in list_versions(model_dir)))
        return out

    def unload(self, name: str) -> list[ModelVersion]:
        """Stop serving every version of ``name``; returns them for the caller to drain and close."""
        old = self.entry(name)
        self._set(ModelEntry(name, old.config, error="unloaded"))
        return list(old.versions.values())

    def _set(self, entry: ModelEntry) -> ModelEntry:
        with self._lock:
            self._models[entry.name] = entry
        return entry

    def _load_version(self, version: ModelVersion) -> None:
        started = time.monotonic()
        try:
            version.manifest_sha256 = manifest_digest(version.path)
            manifest = read_manifest(version.path)
            problems = verify_files(version.path, manifest)
            if problems:
                raise ManifestError("integrity check failed: " + "; ".join(problems))
            version.manifest = manifest
            version.compiled = self._compile(version, manifest)
            warm_up(version.compiled)
            version.processing = build_processing(version.path, manifest.extra, manifest.files, version.config.labels)
        except (ManifestError, RuntimeLoadError, OSError, ValueError) as exc:
            if version.compiled is not None:
                version.compiled.close()
                version.compiled = None
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
            close_version(version)

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


def close_version(version: ModelVersion) -> None:
    """Release a version's runtime (blocking); it must no longer be served."""
    if version.compiled is not None:
        version.compiled.close()
    version.state = VersionState.UNLOADED
    log.info("model unloaded", extra={"fields": {"model": version.name, "version": version.version}})


def manifest_digest(version_dir: Path) -> str:
    """SHA-256 of a version's manifest.json ('' when unreadable): the name of the exact artifact."""
    try:
        return hashlib.sha256((version_dir / MANIFEST_NAME).read_bytes()).hexdigest()
    except OSError:
        return ""


def _selected(config: ModelConfig, model_dir: Path) -> dict[int, bool]:
    """Version → served by default. The policy chooses among servable versions; a held version
    (``"serve": false``) newer than the oldest chosen one is loaded too, for explicit requests."""
    available = list_versions(model_dir)
    servable = {number: is_servable(model_dir / str(number)) for number in available}
    chosen = config.version_policy.select([n for n in available if servable[n]])
    floor = min(chosen, default=0)
    held = [n for n in config.version_policy.select(available) if not servable[n]]
    if not config.version_policy.specific:  # an operator's pinned list is loaded as written
        held += [n for n in available if not servable[n] and n > floor]
    return {number: servable[number] for number in sorted({*chosen, *held})}


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
