"""Rollout state per model: which version is stable, which is the candidate, and how requests that
name no version are split between them.

One JSON file in the state folder (``rollouts.json``) is the source of truth: the REST API and
``appliance rollout`` write it atomically, and every server process re-reads it within a second
(``WatchedFile``), so a change holds for the whole server whichever process received it. Defaults
for the thresholds come from the model's ``model.toml`` ``[rollout]`` table.

Modes:

- ``canary``: the candidate answers ``share`` of the requests that name no version;
- ``ab``: the same split, decided by a hash of the ``sticky_header`` value, so one user always
  meets one version (requests without the header are split at random);
- ``shadow``: the stable version answers every request; ``share`` of them are also sent to the
  candidate, whose answers are only compared (agreement) and discarded.

A rollout is ``active`` until an operator promotes it (the candidate becomes stable) or rolls it
back, or until the automatic rollback finds a threshold breached.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import orjson

from appliance.errors import InvalidInput
from appliance.system.privatefiles import write_private
from appliance.system.watchedfile import WatchedFile

Mode = Literal["canary", "ab", "shadow"]
MODES = ("canary", "ab", "shadow")
STATES = ("active", "promoted", "rolled_back")


@dataclass(frozen=True)
class Thresholds:
    """When the automatic rollback acts; evaluated once ``min_samples`` candidate answers are in."""

    min_samples: int = 200
    max_error_rate: float = 0.02
    max_p99_ratio: float = 2.0
    min_agreement: float = 0.95

    @classmethod
    def parse(cls, raw: dict[str, Any], base: Thresholds | None = None) -> Thresholds:
        base = base or cls()
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(raw) - known
        if unknown:
            raise InvalidInput(f"unknown rollout threshold(s): {', '.join(sorted(unknown))}")
        values = {**dataclasses.asdict(base), **raw}
        for name, value in values.items():
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise InvalidInput(f"rollout threshold '{name}' must be a non-negative number")
        if values["min_agreement"] > 1 or values["max_error_rate"] > 1:
            raise InvalidInput("min_agreement and max_error_rate are fractions between 0 and 1")
        return cls(int(values["min_samples"]), float(values["max_error_rate"]), float(values["max_p99_ratio"]),
                   float(values["min_agreement"]))


@dataclass(frozen=True)
class Rollout:
    model: str
    stable: int
    candidate: int
    mode: Mode = "canary"
    share: float = 0.1
    sticky_header: str = ""
    state: str = "active"
    thresholds: Thresholds = field(default_factory=Thresholds)
    history: tuple[dict[str, Any], ...] = ()

    @property
    def active(self) -> bool:
        return self.state == "active"

    def with_event(self, action: str, who: str, why: str = "", **changes: Any) -> Rollout:
        event = {"at": round(time.time(), 3), "action": action, "by": who, "why": why}
        return dataclasses.replace(self, history=(*self.history, event)[-50:], **changes)

    def to_dict(self) -> dict[str, Any]:
        doc = dataclasses.asdict(self)
        doc["history"] = list(self.history)
        return doc


def parse_rollout(model: str, doc: Any, defaults: Thresholds | None = None) -> Rollout:
    """A rollout from the API's JSON (or the state file); every field is checked."""
    if not isinstance(doc, dict):
        raise InvalidInput("a rollout is a JSON object")
    known = {"stable", "candidate", "mode", "share", "sticky_header", "thresholds", "state", "history", "model"}
    unknown = set(doc) - known
    if unknown:
        raise InvalidInput(f"unknown rollout field(s): {', '.join(sorted(unknown))}")
    stable, candidate = doc.get("stable"), doc.get("candidate")
    if type(stable) is not int or type(candidate) is not int or stable <= 0 or candidate <= 0:
        raise InvalidInput("'stable' and 'candidate' must be version numbers")
    if stable == candidate:
        raise InvalidInput("'stable' and 'candidate' must be different versions")
    mode, share = doc.get("mode", "canary"), doc.get("share", 0.1)
    if mode not in MODES:
        raise InvalidInput(f"'mode' must be one of {', '.join(MODES)}")
    if isinstance(share, bool) or not isinstance(share, int | float) or not 0 <= share <= 1:
        raise InvalidInput("'share' must be a fraction between 0 and 1")
    header = doc.get("sticky_header", "")
    if not isinstance(header, str) or (mode == "ab" and not header):
        raise InvalidInput("an 'ab' rollout needs 'sticky_header' (e.g. \"X-User-Id\")")
    state = doc.get("state", "active")
    if state not in STATES:
        raise InvalidInput(f"'state' must be one of {', '.join(STATES)}")
    thresholds = Thresholds.parse(doc.get("thresholds") or {}, defaults)
    history = tuple(h for h in doc.get("history", ()) if isinstance(h, dict))
    return Rollout(model, stable, candidate, mode, float(share), header, state, thresholds, history)


def _parse_file(data: bytes) -> dict[str, Rollout]:
    doc = orjson.loads(data)
    if not isinstance(doc, dict):
        raise ValueError("rollouts.json must hold an object")
    try:
        return {name: parse_rollout(name, item) for name, item in doc.items()}
    except InvalidInput as exc:  # the watcher treats a ValueError as "unreadable until fixed"
        raise ValueError(exc.message) from None


class RolloutStore:
    """``<state_dir>/rollouts.json``: read through a watcher (cheap per request), written atomically."""

    def __init__(self, path: Path, interval_s: float = 1.0) -> None:
        self.path = path
        self._file: WatchedFile[dict[str, Rollout]] = WatchedFile(path, _parse_file, {}, interval_s)
        self._file.reload()

    def all(self) -> dict[str, Rollout]:
        return self._file.current()

    def get(self, model: str) -> Rollout | None:
        return self._file.current().get(model)

    def put(self, rollout: Rollout) -> None:
        self._write({**self._file.reload(), rollout.model: rollout})

    def remove(self, model: str) -> None:
        rollouts = dict(self._file.reload())
        if rollouts.pop(model, None) is not None:
            self._write(rollouts)

    def _write(self, rollouts: dict[str, Rollout]) -> None:
        write_private(self.path, orjson.dumps({name: r.to_dict() for name, r in sorted(rollouts.items())},
                                              option=orjson.OPT_INDENT_2))
        self._file.reload()
