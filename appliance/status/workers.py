"""The status document of a whole multi-worker server from each worker's own document.

Counts and rates add up across workers; latency percentiles take the slowest worker's (a merged
histogram is not at hand here, and the slowest is what an operator must see); the ``workers``
list keeps each worker's health, memory and traffic, and ``memory`` the whole server's resident
and proportional set sizes (pages shared by the forked workers, or mapped from the same files,
count once in PSS).
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

import psutil

_SUMMED_SERIES = ("rps", "queue_depth", "in_flight")
_MAX_SERIES = ("p50_ms", "p95_ms", "p99_ms")
_HEALTH_ORDER = ("unavailable", "draining", "starting", "degraded", "ok")


def worker_summary(index: int, doc: dict[str, Any] | None) -> dict[str, Any]:
    if doc is None:
        return {"index": index, "health": "unavailable", "pid": None}
    process = doc.get("process", {})
    return {"index": index, "pid": doc.get("pid"), "health": doc["server"]["health"],
            "uptime_s": doc["server"]["uptime_s"], "rss_bytes": process.get("rss_bytes"),
            # a copy: merge_status adds the other workers' counts into the local document's totals
            "cpu_percent": process.get("cpu_percent"), "totals": dict(doc.get("totals", {}))}


def _add_series(into: dict[str, list[Any]], other: dict[str, list[Any]]) -> None:
    """Align on the newest sample: every worker samples on the same interval."""
    for name in (*_SUMMED_SERIES, *_MAX_SERIES):
        mine, theirs = into.get(name), other.get(name)
        if not mine or not theirs:
            continue
        for back in range(1, min(len(mine), len(theirs)) + 1):
            a, b = mine[-back], theirs[-back]
            if b is None:
                continue
            if a is None:
                mine[-back] = b
            elif name in _SUMMED_SERIES:
                mine[-back] = round(a + b, 3)
            else:
                mine[-back] = max(a, b)


def _add_models(into: list[dict[str, Any]], other: list[dict[str, Any]]) -> None:
    versions = {(m["name"], v["version"]): v for m in other for v in m["versions"]}
    for model in into:
        for version in model["versions"]:
            theirs = versions.get((model["name"], version["version"]))
            if theirs is not None:
                for key in ("requests", "failed", "rps"):
                    version[key] = version[key] + theirs[key]


def server_memory() -> dict[str, Any]:
    """RSS and PSS of every process of this server: the supervisor and all its children."""
    rows = []
    with contextlib.suppress(psutil.Error):
        parent = psutil.Process(os.getppid())
        for process in [parent, *parent.children()]:
            with contextlib.suppress(psutil.Error):
                info = process.memory_full_info()
                rows.append({"pid": process.pid, "name": " ".join(process.cmdline()[-2:]) if process.pid ==
                             parent.pid else "", "rss_bytes": info.rss, "pss_bytes": getattr(info, "pss", info.rss)})
    return {"rss_bytes": sum(r["rss_bytes"] for r in rows), "pss_bytes": sum(r["pss_bytes"] for r in rows),
            "processes": len(rows)}


def merge_status(index: int, local: dict[str, Any], peers: dict[int, dict[str, Any] | None]) -> dict[str, Any]:
    """``local``: this worker's document (modified and returned); ``peers``: the others', None when
    one did not answer."""
    docs = {index: local, **peers}
    summaries = [worker_summary(i, docs[i]) for i in sorted(docs)]
    for doc in peers.values():
        if doc is None:
            continue
        for key, value in doc.get("totals", {}).items():
            local["totals"][key] = local["totals"].get(key, 0) + value
        _add_series(local["series"], doc.get("series", {}))
        _add_models(local["models"], doc.get("models", []))
        for key in ("entries", "bytes", "hits", "misses"):
            local["cache"][key] += doc["cache"][key]
        local["process"]["cpu_percent"] += doc["process"]["cpu_percent"]
        local["jobs"] = [*local.get("jobs", []), *doc.get("jobs", [])]  # each on the worker that took it
    worst = min((s["health"] for s in summaries), key=_HEALTH_ORDER.index)
    local["server"]["health"] = worst
    local["workers"] = summaries
    local["memory"] = server_memory()
    return local
