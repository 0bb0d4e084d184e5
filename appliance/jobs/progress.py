"""Progress of a CLI job: a tqdm bar with rows/s and ETA on a terminal, plain lines elsewhere.

tqdm is used when it is installed (it comes with the ``optimize`` extra) and stderr is a
terminal; a serving install, a pipe or a log file gets one line every few seconds instead, which
is what journald and CI logs want.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from appliance.jobs.runner import JobStatus

_LINE_EVERY_S = 5.0


class ProgressReporter:
    def __init__(self, label: str, interactive: bool | None = None) -> None:
        self.label = label
        self._bar: Any = None
        self._last_line = 0.0
        self._shown = 0
        if interactive if interactive is not None else sys.stderr.isatty():
            try:
                from tqdm import tqdm

                self._bar = tqdm(desc=label, unit=" rows", unit_scale=True, dynamic_ncols=True)
            except ImportError:
                pass

    def __call__(self, status: JobStatus) -> None:
        if self._bar is not None:
            if status.rows_total is not None and self._bar.total != status.rows_total:
                self._bar.total = status.rows_total
            self._bar.update(status.rows_done - self._shown)
            self._shown = status.rows_done
            return
        now = time.monotonic()
        if now - self._last_line >= _LINE_EVERY_S:
            self._last_line = now
            self.line(status)

    def line(self, status: JobStatus) -> None:
        total = f"/{status.rows_total}" if status.rows_total is not None else ""
        eta = f", ETA {status.eta_s:.0f} s" if status.eta_s is not None else ""
        print(f"{self.label}: {status.rows_done}{total} rows, {status.rows_per_s:.0f} rows/s{eta}, "
              f"{status.rows_rejected} rejected", file=sys.stderr, flush=True)

    def close(self, status: JobStatus) -> None:
        if self._bar is not None:
            self._bar.close()
        self.line(status)
