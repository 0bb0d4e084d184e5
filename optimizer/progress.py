"""Progress bars and library chatter, both silenced by ``--quiet``.

NNCF and ONNX Runtime log and warn freely (deprecations inside their own code, per-layer INFO
lines); a script calling ``appliance optimize --quiet`` wants only the result or one error line.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass
from typing import TypeVar

from modelrepo.telemetry import disable_usage_telemetry

T = TypeVar("T")

@dataclass(frozen=True)
class Progress:
    quiet: bool = False

    def bar(self, iterable: Iterable[T], desc: str, total: int | None = None) -> Iterator[T]:
        from tqdm import tqdm

        yield from tqdm(iterable, desc=desc, total=total, disable=self.quiet, leave=False,
                        file=sys.stderr, dynamic_ncols=True)

    @contextmanager
    def library_output(self) -> Iterator[None]:
        """Send a library's own progress display (NNCF draws with rich on stdout) to stderr or nowhere."""
        if self.quiet:
            with open(os.devnull, "w") as sink, redirect_stdout(sink):
                yield
        else:
            with redirect_stdout(sys.stderr):
                yield

    def note(self, message: str) -> None:
        if not self.quiet:
            print(message, file=sys.stderr, flush=True)


@contextmanager
def library_noise(quiet: bool) -> Iterator[None]:
    """Keep third-party warnings and INFO logs out of the output while optimizing."""
    disable_usage_telemetry()
    level = logging.ERROR if quiet else logging.WARNING
    loggers = [logging.getLogger(name) for name in ("nncf", "onnxruntime", "root")]
    saved = [logger.level for logger in loggers]
    with warnings.catch_warnings():
        # Deprecations and user warnings raised inside NNCF/ONNX Runtime are theirs to fix, not the
        # operator's; our own code is still checked by the test suite's warnings-as-errors.
        for module in ("nncf", "onnxruntime", "onnx", "openvino", "torch", "transformers", "optimum"):
            warnings.filterwarnings("ignore", module=rf"{module}(\..*)?")
        for logger in loggers:
            logger.setLevel(level)
        try:
            yield
        finally:
            for logger, old in zip(loggers, saved, strict=True):
                logger.setLevel(old)
