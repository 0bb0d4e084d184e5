"""Publish passing artifacts as new versions: staged beside the versions, then renamed into place.

All passing formats are staged before the first is published, so a failure while writing leaves
no version at all; each rename is atomic, so the server never sees half a version.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import sys
import tomllib
from contextlib import ExitStack
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from modelrepo import Manifest, publish_version, staging_directory
from optimizer.errors import OptimizerError
from optimizer.job import Candidate
from optimizer.report import Row
from optimizer.sources import Source
from optimizer.specs import TensorSpec

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_LIBRARIES = ("openvino", "nncf", "onnxruntime", "onnx", "numpy", "optimum", "torch", "transformers")


@dataclass
class PublishContext:
    """Everything every manifest of one run shares."""

    model_dir: Path
    source: Source
    provenance: dict[str, Any]
    parameters: dict[str, Any]
    report: list[dict[str, Any]]
    #: Files every version carries beside the model (a text model's tokenizer.json) and top-level
    #: manifest keys describing them (``preprocessing``: how a client turns text into inputs).
    companions: tuple[Path, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)


def check_model_dir(repository: Path, name: str) -> Path:
    """Refuse bad names and unwritable repositories before any work is done."""
    if not _NAME.match(name):
        raise OptimizerError(f"model name {name!r} must be letters, digits, '_', '.', '-'")
    model_dir = repository / name
    try:
        model_dir.mkdir(parents=True, exist_ok=True)
        probe = model_dir / f".write-probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise OptimizerError(f"repository {repository} is not writable ({exc.strerror or exc})") from None
    return model_dir


@dataclass
class Publication:
    """One artifact to publish: its files, its report row (with the speed gate's verdict) and the
    drift baseline live traffic is later compared with."""

    candidate: Candidate
    row: Row
    drift: dict[str, Any]


def is_version_of(source: Source, model_dir: Path) -> bool:
    """Whether the source is itself a version of the model being published to."""
    return source.repository is not None and source.model_name == model_dir.name and (
        source.repository.resolve() == model_dir.parent.resolve())


def publish(items: list[Publication], context: PublishContext) -> list[int]:
    """Stage every artifact, then publish them in order; returns the new version numbers."""
    with ExitStack() as stack:
        staged = []
        for item in items:
            staging = stack.enter_context(staging_directory(context.model_dir))
            for path in [*sorted(item.candidate.directory.iterdir()), *context.companions]:
                shutil.copyfile(path, staging / path.name)
            _manifest(item, context, staging).write(staging)
            staged.append(staging)
        return [int(publish_version(context.model_dir, staging).name) for staging in staged]


def _manifest(item: Publication, context: PublishContext, staging: Path) -> Manifest:
    candidate, row = item.candidate, item.row
    if candidate.gate is None:
        raise ValueError(f"{candidate.format}: an ungated candidate cannot be published")
    source = context.source
    same_model = is_version_of(source, context.model_dir)
    return Manifest.for_directory(
        staging, format=candidate.format, precision=candidate.precision,
        model_file=candidate.model_file,
        provenance=context.provenance,
        parent_version=source.version if same_model else None,
        optimizer={
            "tool": "model-appliance optimizer", "version": _version("model-appliance"),
            "parameters": context.parameters, "libraries": library_versions(),
            **candidate.details,
        },
        metrics={"accuracy": candidate.gate.to_dict(), "artifact": row.to_dict(), "report": context.report,
                 "speed_gate": row.speed_gate, "baseline": item.drift, "host": host()},
        serve=bool(row.serve), extra=dict(context.extra),
    )


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in _LIBRARIES:
        version = _version(name)
        if version:
            versions[name] = version
    return versions


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return ""


def host() -> dict[str, Any]:
    """The machine the speed figures were measured on (they do not transfer to other hosts)."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "platform": sys.platform}


def read_max_batch(model_dir: Path) -> int | None:
    """``max_batch_size`` from an existing model.toml (the serving config decides the batch)."""
    path = model_dir / "model.toml"
    try:
        value = tomllib.loads(path.read_text(encoding="utf-8")).get("max_batch_size")
    except (OSError, tomllib.TOMLDecodeError):
        return None
    return int(value) if isinstance(value, int) and value > 0 else None


def ensure_model_toml(model_dir: Path, source: Source, max_batch: int) -> bool:
    """Write a minimal serving config for a new model name; an existing one is the operator's."""
    path = model_dir / "model.toml"
    if path.exists():
        return False
    lines = ["# Written by `appliance optimize` from the model's inputs and outputs; edit freely.",
             f"max_batch_size = {max_batch}", ""]
    for section, specs in (("input", source.inputs), ("output", source.outputs)):
        lines += _tensor_tables(section, specs)
    lines += ["[version_policy]", "latest = 1", ""]
    tmp = path.with_suffix(".toml.tmp")
    tmp.write_text("\n".join(lines), encoding="utf-8")
    tmp.replace(path)
    return True


def _tensor_tables(section: str, specs: tuple[TensorSpec, ...]) -> list[str]:
    lines = []
    for spec in specs:
        dims = ", ".join(str(-1 if d is None else d) for d in spec.shape[1:])
        lines += [f"[[{section}]]", f"name = {json.dumps(spec.name)}", f'datatype = "{spec.datatype}"',
                  f"dims = [{dims}]", ""]
    return lines
