"""The optimizer: FP32 model + a little data → INT8 (and pruned) artifacts, gated and published.

Shares only :mod:`modelrepo` with the server. Entry points: :func:`optimize` (library),
``appliance optimize`` / ``python -m optimizer`` (command line), :func:`optimize_bundled`
(install-time INT8 versions of the bundled sample). Heavy libraries load on first use.
"""

from __future__ import annotations

from typing import Any

from optimizer.errors import GateRefused, OptimizerError

__all__ = ["GateRefused", "OptimizeRequest", "OptimizeResult", "OptimizerError", "optimize",
           "optimize_bundled"]


def __getattr__(name: str) -> Any:
    """Lazy exports, so ``import optimizer.cli`` does not pull numpy/onnx into ``appliance --help``."""
    if name in ("OptimizeRequest", "OptimizeResult", "optimize"):
        from optimizer import pipeline

        return getattr(pipeline, name)
    if name == "optimize_bundled":
        from optimizer.bundled import optimize_bundled

        return optimize_bundled
    raise AttributeError(name)
