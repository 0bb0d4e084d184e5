"""The audit writer process of a multi-worker server: the only process holding the audit keys.

The supervisor binds the socket (``bind_listener``) before forking, so workers can connect from
their first moment and a restarted writer finds the same socket with the connections queued on it.
Each worker's ``RemoteAuditLog`` sends frames of records; this process appends them to the real
``AuditLog``, whose writer thread group-commits the records of every worker together, and answers
each frame holding strict records with one ack once all of them are committed (or with the error,
which fails those requests). It also runs the log's retention and capacity checks (``upkeep``), and
pushes its figures to the workers with acks and every ``PUSH_INTERVAL_S``.

Exit codes (the supervisor's contract): 0 drained after SIGTERM; 2 configuration error; 3 missing or
wrong key, or a damaged log (a restart cannot help); 1 anything else (restart it).

``python -m appliance.audit.process --config FILE --socket PATH`` runs it alone (tests, debugging).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import socket
import stat
import sys
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from appliance.audit import upkeep
from appliance.audit.integrity import AuditCorruptError
from appliance.audit.log import AuditLog
from appliance.audit.model import AuditError, AuditKeyError, AuditRecord
from appliance.audit.remote import ACK, BYE, BYE_OK, HELLO, RECORDS, STATE, Channel, Row, State
from appliance.config import ConfigError, Settings, load_settings
from appliance.system.eventloop import run as run_loop

_log = logging.getLogger("appliance.audit")
#: How often every worker gets the writer's figures (``RemoteAuditLog.stats`` and ``health``).
PUSH_INTERVAL_S = 0.5
#: Figures ride on an ack at most this often per connection (fresher health under load, for free).
_ACK_STATE_S = 0.05
#: How long a draining writer waits for the commits of records it has received.
DRAIN_TIMEOUT_S = 30.0


def bind_listener(path: Path) -> socket.socket:
    """A listening unix socket at ``path`` that only this uid can open (a stale one is replaced)."""
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISSOCK(path.lstat().st_mode):
            path.unlink()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        old = os.umask(0o177)  # never, even for a moment, a socket others may connect to
        try:
            sock.bind(str(path))
        finally:
            os.umask(old)
        os.chmod(path, 0o600)
        sock.listen(1024)
    except BaseException:
        sock.close()
        raise
    return sock


class _Connection:
    """One worker's connection."""

    __slots__ = ("chan", "hub", "push_due", "pushed")

    def __init__(self, hub: _Hub, sock: socket.socket) -> None:
        self.hub, self.pushed, self.push_due = hub, time.monotonic(), False
        self.chan = Channel(sock, self._on_message, self._on_lost)
        self.chan.attach(hub.loop)
        self.chan.send((HELLO, hub.state(capacity=True)))

    def _on_message(self, message: Any) -> None:
        kind = message[0]
        if kind == RECORDS:
            _, frame, flush, rows, loose = message
            self.hub.take(self, frame, flush, rows, loose)
        elif kind == BYE:  # every record before it has been taken: the worker may go
            self.chan.send((BYE_OK,))

    def _on_lost(self, reason: str) -> None:
        self.hub.connections.discard(self)

    def ack(self, frame: int, errors: list[str | None] | None) -> None:
        now, state = time.monotonic(), None
        if now - self.pushed >= _ACK_STATE_S:
            state, self.pushed = self.hub.state(), now
        elif not self.push_due:  # figures this ack does not carry follow shortly
            self.push_due = True
            self.hub.loop.call_later(_ACK_STATE_S, self.push)
        self.chan.send((ACK, frame, errors, state))

    def push(self) -> None:
        self.push_due = False
        self.pushed = time.monotonic()
        self.chan.send((STATE, self.hub.state()))


class _Hub:
    """Accepts workers and turns their frames into appends to the one ``AuditLog``."""

    def __init__(self, log: AuditLog, listener: socket.socket, stop: asyncio.Event) -> None:
        self.log, self.listener, self.stop = log, listener, stop
        self.loop = asyncio.get_running_loop()
        self.connections: set[_Connection] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self.exit_code = 0

    def start(self) -> None:
        self.listener.setblocking(False)
        self.loop.add_reader(self.listener.fileno(), self._accept)

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # out of descriptors: the connection stays queued, try later
                _log.error("audit writer cannot accept a worker: %s", exc)
                return
            self.connections.add(_Connection(self, sock))

    def state(self, *, capacity: bool = False) -> State:
        keeping = self.log.upkeep
        return self.log.stats(), self.log.health(), keeping.capacity if capacity and keeping else None

    def take(self, conn: _Connection, frame: int, flush: bool, rows: list[Row], loose: list[Row]) -> None:
        if loose:
            records = [AuditRecord(*row) for row in loose]
            if self.log.strict:
                for record in records:
                    self.log.append_nowait(record)
            else:
                self._spawn(self._relaxed(records))
        if rows:
            self._spawn(self._commit(conn, frame, [AuditRecord(*row) for row in rows], flush))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = self.loop.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _relaxed(self, records: list[AuditRecord]) -> None:
        try:
            for record in records:  # relaxed appends return at once: one hand-over for all of them
                await self.log.append(record)
        except AuditError as exc:
            _log.error("audit records from a worker lost: %s", exc)

    async def _commit(self, conn: _Connection, frame: int, records: list[AuditRecord], flush: bool) -> None:
        """Append the frame's records together (one group commit serves them), then one ack."""
        errors: list[str | None] | None = None
        try:
            if len(records) == 1:
                await self.log.append(records[0], flush=flush)
            else:
                last = len(records) - 1
                results = await asyncio.gather(
                    *(self.log.append(r, flush=flush and i == last) for i, r in enumerate(records)),
                    return_exceptions=True)
                if any(r is not None for r in results):
                    errors = [None if r is None else str(r) or type(r).__name__ for r in results]
        except Exception as exc:
            errors = [str(exc) or type(exc).__name__] * len(records)
        if frame:
            conn.ack(frame, errors)

    async def push_forever(self) -> None:
        """Figures to every worker; and stop (to be restarted) if the writer thread has died."""
        while True:
            await asyncio.sleep(PUSH_INTERVAL_S)
            state = self.state(capacity=True)
            stats = state[0]
            if not stats.healthy and stats.last_error is None:  # not alive, and not a commit failure
                _log.error("audit writer thread has stopped: exiting to be restarted")
                self.exit_code = 1
                self.stop.set()
                return
            now = time.monotonic()
            for conn in list(self.connections):
                if conn.chan.backlog == 0 and now - conn.pushed >= PUSH_INTERVAL_S / 2:
                    conn.pushed = now
                    conn.chan.send((STATE, state))

    async def drain(self) -> None:
        """Take no more records; wait for the commits (and acks) of those taken."""
        with contextlib.suppress(Exception):
            self.loop.remove_reader(self.listener.fileno())
        for conn in self.connections:
            conn.chan.pause()
        if self.tasks:
            await asyncio.wait(set(self.tasks), timeout=DRAIN_TIMEOUT_S)

    def close(self) -> None:
        for conn in list(self.connections):
            conn.chan.close()
        self.connections.clear()
        self.listener.close()


async def _serve(settings: Settings, listener: socket.socket) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # ^C reaches the supervisor, which stops us last
    log = AuditLog.open(settings)  # blocking, but nothing else runs yet; raises on a key problem
    hub: _Hub | None = None
    keeping: asyncio.Task[None] | None = None
    pushing: asyncio.Task[None] | None = None
    try:
        keeping = await upkeep.start(settings, log)
        hub = _Hub(log, listener, stop)
        hub.start()
        pushing = asyncio.create_task(hub.push_forever())
        _log.info("audit writer ready", extra={"fields": {"pid": os.getpid(), "mode": settings.audit.mode}})
        await stop.wait()
        _log.info("audit writer draining", extra={"fields": {"workers": len(hub.connections)}})
    finally:
        if pushing is not None:
            pushing.cancel()
        if hub is not None:
            await hub.drain()
        await upkeep.stop(keeping)
        await log.aclose()  # commits everything taken, signs a final checkpoint
        if hub is not None:
            hub.close()
    _log.info("audit writer stopped", extra={"fields": {"records": log.stats().records_written}})
    return hub.exit_code if hub is not None else 1


def serve_audit_writer(settings: Settings, listener: socket.socket) -> int:
    """Run the writer until SIGTERM (in a forked child of the supervisor); the exit code."""
    try:
        return run_loop(_serve(settings, listener))
    except (AuditKeyError, AuditCorruptError) as exc:
        _log.error("audit writer cannot start: %s", exc)
        return 3
    except ConfigError as exc:
        _log.error("audit writer: configuration error: %s", exc)
        return 2
    except AuditError as exc:
        _log.error("audit writer failed: %s", exc)
        return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m appliance.audit.process",
                                     description="run the audit writer process alone (tests, debugging)")
    parser.add_argument("--config", type=Path, help="appliance.toml (finds the database and keys)")
    parser.add_argument("--state-dir", type=Path, help="override server.state_dir")
    parser.add_argument("--socket", type=Path, required=True, help="unix socket to listen on")
    args = parser.parse_args(argv)
    try:
        settings = load_settings(args.config)
        if args.state_dir is not None:
            settings = settings.replace("server", state_dir=args.state_dir)
    except ConfigError as exc:
        print(f"appliance: configuration error: {exc}", file=sys.stderr)
        return 2
    from appliance.logs import configure_logging

    configure_logging(settings.server.log_level)
    listener = bind_listener(args.socket)
    inode = args.socket.stat().st_ino
    try:
        return serve_audit_writer(settings, listener)
    finally:
        with contextlib.suppress(OSError):
            if args.socket.stat().st_ino == inode:  # still ours, not a newer writer's
                args.socket.unlink()


if __name__ == "__main__":
    sys.exit(main())
