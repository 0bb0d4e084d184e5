"""The main process of a multi-worker server: start, watch, restart and drain the workers.

It owns nothing on the request path. Before forking it imports what every worker needs and
freezes the garbage collector's view of those objects (``gc.freeze``), so the workers share those
pages instead of each importing its own copy; it holds the server's ports (bound with
``SO_REUSEPORT`` but not listening, so no other program can take them while a worker restarts) and
the audit writer's socket. It starts no thread and no event loop, which is what makes ``fork``
safe here: a worker is a fork of a single-threaded process that has loaded no model.

Signals: SIGTERM or SIGINT drains every worker (each drains its own listening socket without
resetting queued connections, ``appliance.protocol.drain``), then stops the audit writer once the
last worker has handed it its records. A worker that dies is restarted after a back-off; the
others keep answering. Children die with the supervisor (``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import logging
import os
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from appliance.config import ConfigError, Settings
from appliance.processes.plan import WorkerPlan
from appliance.system.listeners import listen_addresses

log = logging.getLogger("appliance")

_SIGNALS = {signal.SIGCHLD, signal.SIGTERM, signal.SIGINT}
_PR_SET_PDEATHSIG = 1
#: A child that exits sooner than this after its start counts as a failed start.
FAST_EXIT_S = 5.0
#: Failed starts in a row after which the server gives up (a broken config, a wrong key).
MAX_FAILED_STARTS = 5
#: Exit codes that mean "this can never start" (configuration, audit key or corrupt log): stop at once.
FATAL_CODES = {2, 3}


@dataclass(frozen=True)
class WorkerIdentity:
    """What a worker knows of the server it belongs to."""

    index: int
    count: int
    run_dir: Path

    def socket_path(self, index: int | None = None) -> Path:
        """The worker's private control socket (peers reach it for metrics, status and model loads)."""
        return self.run_dir / f"worker-{self.index if index is None else index}.sock"

    def ready_path(self, index: int | None = None) -> Path:
        return self.run_dir / f"worker-{self.index if index is None else index}.ready"

    @property
    def audit_socket(self) -> Path:
        return self.run_dir / "audit.sock"

    def all_ready(self) -> bool:
        return all(self.ready_path(i).exists() for i in range(self.count))

    def others_ready(self) -> bool:
        """Whether another worker already serves: then this one is a restart."""
        return any(self.ready_path(i).exists() for i in range(self.count) if i != self.index)


@dataclass
class Child:
    role: str  # "worker" or "audit"
    index: int
    pid: int
    started: float = field(default_factory=time.monotonic)
    failed_starts: int = 0


def make_run_dir() -> Path:
    """A private (0700) folder for the control sockets: systemd's ``RuntimeDirectory=`` when set,
    else a fresh one under the temporary folder (short: a Unix socket path holds ~107 bytes)."""
    base = os.environ.get("RUNTIME_DIRECTORY")
    if base:
        path = Path(base.split(":")[0]) / f"run-{os.getpid()}"
        path.mkdir(mode=0o700)
        return path
    return Path(tempfile.mkdtemp(prefix="appliance-"))


def hold_ports(settings: Settings) -> list[socket.socket]:
    """Bind the REST and gRPC ports with ``SO_REUSEPORT`` (workers join them) without listening:
    a port another program holds stops the start here, with one clear error."""
    held: list[socket.socket] = []
    for name, port in (("server.port", settings.server.port), ("grpc.port", settings.grpc.port)):
        if port == 0 and name == "grpc.port":
            continue
        for family, address in listen_addresses(settings.server.host, port):
            sock = socket.socket(family, socket.SOCK_STREAM)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.bind(address)
            except OSError as exc:
                sock.close()
                for other in held:
                    other.close()
                raise ConfigError(f"cannot listen on {address} ({name}): {exc.strerror}") from None
            held.append(sock)
    return held


def _die_with_parent() -> None:
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


class Supervisor:
    """Forks the audit writer and the workers, restarts them, drains them (see the module doc)."""

    def __init__(self, settings: Settings, plan: WorkerPlan,
                 run_worker: Callable[[Settings, WorkerIdentity], int],
                 run_writer: Callable[[Settings, socket.socket], int] | None,
                 writer_listener: socket.socket | None, run_dir: Path,
                 held: list[socket.socket] | None = None) -> None:
        self.settings, self.plan, self.run_dir = settings, plan, run_dir
        self._held = held or []
        self._run_worker, self._run_writer, self._writer_listener = run_worker, run_writer, writer_listener
        self.children: dict[int, Child] = {}
        self._stopping = False
        self._exit_code = 0

    # -- starting -------------------------------------------------------------------------------
    def _fork(self, role: str, index: int, failed_starts: int = 0) -> None:
        pid = os.fork()
        if pid == 0:  # the child: never returns into the supervisor's loop
            code = 1
            try:
                _die_with_parent()
                signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)
                signal.signal(signal.SIGINT, signal.SIG_IGN)  # ^C reaches the supervisor, which drains us
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                gc.unfreeze()
                for sock in self._held:  # the ports stay held by the supervisor; a worker binds its own
                    sock.close()
                if role != "audit" and self._writer_listener is not None:
                    self._writer_listener.close()
                if role == "audit":
                    assert self._run_writer is not None and self._writer_listener is not None
                    code = self._run_writer(self.settings, self._writer_listener)
                else:
                    code = self._run_worker(self.settings, WorkerIdentity(index, self.plan.workers, self.run_dir))
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            except BaseException:
                log.exception("%s %d failed", role, index)
                code = 1
            finally:
                logging.shutdown()
                os._exit(code)
        self.children[pid] = Child(role, index, pid, failed_starts=failed_starts)
        log.info("started", extra={"fields": {"role": role, "index": index, "pid": pid}})

    def start(self) -> None:
        signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
        gc.collect()
        gc.freeze()  # what is imported now stays shared with the children (no refcount-GC copy-on-write)
        if self._run_writer is not None:
            self._fork("audit", 0)
        for index in range(self.plan.workers):
            self._fork("worker", index)

    # -- watching -------------------------------------------------------------------------------
    def run(self) -> int:
        """Watch until SIGTERM/SIGINT (or a fatal child exit), then drain; the server's exit code."""
        self.start()
        while not self._stopping:
            info = signal.sigtimedwait(_SIGNALS, 1.0)
            if info is None:
                continue
            if info.si_signo in (signal.SIGTERM, signal.SIGINT):
                log.info("draining", extra={"fields": {"workers": self.plan.workers,
                                                       "grace_s": self.settings.server.drain_grace_s}})
                break
            self._reap()
        return self.stop()

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            child = self.children.pop(pid, None)
            if child is not None:
                self._exited(child, os.waitstatus_to_exitcode(status))

    def _exited(self, child: Child, code: int) -> None:
        if child.role == "worker":
            with contextlib.suppress(FileNotFoundError):
                (self.run_dir / f"worker-{child.index}.ready").unlink()
        lived = time.monotonic() - child.started
        fields = {"role": child.role, "index": child.index, "pid": child.pid, "code": code,
                  "lived_s": round(lived, 1)}
        if self._stopping:
            return
        if code in FATAL_CODES:
            log.error("cannot start: stopping the server", extra={"fields": fields})
            self._exit_code, self._stopping = code, True
            return
        failed = child.failed_starts + 1 if lived < FAST_EXIT_S else 0
        if failed >= MAX_FAILED_STARTS:
            log.error("keeps failing: stopping the server", extra={"fields": fields})
            self._exit_code, self._stopping = 1, True
            return
        log.warning("exited: restarting", extra={"fields": fields})
        time.sleep(min(2.0, 0.1 * 2 ** failed) if failed else 0.0)
        self._fork(child.role, child.index, failed)

    # -- stopping -------------------------------------------------------------------------------
    def stop(self) -> int:
        """Drain the workers (SIGTERM each), then the audit writer; SIGKILL what outlives its grace."""
        self._stopping = True
        workers = [c for c in self.children.values() if c.role == "worker"]
        self._signal_and_wait(workers, self.settings.server.drain_grace_s + 10.0)
        writers = [c for c in self.children.values() if c.role == "audit"]
        self._signal_and_wait(writers, 30.0)
        shutil.rmtree(self.run_dir, ignore_errors=True)
        log.info("stopped", extra={"fields": {"code": self._exit_code}})
        return self._exit_code

    def _signal_and_wait(self, children: list[Child], grace_s: float) -> None:
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        pending = {c.pid for c in children}
        while pending and time.monotonic() < deadline:
            for pid in list(pending):
                try:
                    done, status = os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    done, status = pid, 0
                if done:
                    pending.discard(pid)
                    gone = self.children.pop(pid, None)
                    code = os.waitstatus_to_exitcode(status)
                    if code not in (0, -signal.SIGTERM) and gone is not None:
                        log.warning("exited while stopping", extra={"fields": {
                            "role": gone.role, "index": gone.index, "code": code}})
            if pending:
                signal.sigtimedwait({signal.SIGCHLD}, 0.05)
        for pid in pending:
            log.error("did not stop in time: killed", extra={"fields": {"pid": pid}})
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError, OSError):
                os.waitpid(pid, 0)
            self.children.pop(pid, None)

