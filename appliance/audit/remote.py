"""``RemoteAuditLog``: a worker's handle on the audit writer process (``appliance.audit.process``).

A multi-worker server has one process that holds the audit keys and the database; workers hand it
their records over a unix socket (0600, in the server's 0700 run folder, same uid). The handle has
``AuditLog``'s surface, so the data plane cannot tell the two apart:

* the records of one event-loop iteration travel in one frame (one ``sendmsg``), as
  ``AuditLog._hand_over`` hands them to its thread in one queue put;
* strict appenders wait for their frame's ack, which the writer sends once the transaction holding
  the records is committed; the connection lost before the ack fails them with ``AuditError`` (the
  request fails as on any audit failure: nothing is acknowledged without a commit);
* the log reconnects in the background while the writer restarts; meanwhile strict appends fail at
  once and ``health()`` is not ready; relaxed records wait in a bounded backlog;
* the writer pushes its ``AuditStats``, health and capacity with acks and every half second, so
  ``stats()`` and ``health()`` stay synchronous and cost nothing.

Wire format: a 4-byte big-endian length, then a pickle of a tuple whose first item says what it
is. Pickle is safe here because both ends are the same program under the same uid on one host,
behind a socket only that uid can open; it carries a record's fields (numpy summary values
included) faster than anything hand-written. Sockets are driven by ``add_reader`` directly: a frame
costs one syscall each way and no transport or protocol objects.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import operator
import pickle
import socket
import struct
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from appliance.audit.log import AuditPaths, audit_paths
from appliance.audit.model import AuditError, AuditHealth, AuditRecord, AuditStats
from appliance.config import Settings

_log = logging.getLogger("appliance.audit")

# Message kinds: worker -> writer
RECORDS, BYE = 1, 2
# writer -> worker
HELLO, ACK, STATE, BYE_OK = 11, 12, 13, 14

_HEADER = struct.Struct("!I")
#: A frame larger than this is a bug or garbage: the connection is dropped.
MAX_FRAME = 256 * 1024 * 1024
_RECV = 256 * 1024
#: Relaxed records kept while the writer is unreachable; beyond this they are dropped (and counted).
MAX_BACKLOG = 100_000
#: How long ``aclose``/``close`` wait for the writer to confirm it has every record.
CLOSE_TIMEOUT_S = 30.0

FIELDS = tuple(f.name for f in dataclasses.fields(AuditRecord))
#: A record as the tuple that travels (C-level getter: far cheaper than ``dataclasses.astuple``).
record_row: Callable[[AuditRecord], tuple[Any, ...]] = operator.attrgetter(*FIELDS)

Row = tuple[Any, ...]
State = tuple[AuditStats, AuditHealth, Any]  # stats, health, upkeep Capacity (or None)


def encode(message: tuple[Any, ...]) -> tuple[bytes, bytes]:
    payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _HEADER.pack(len(payload)), payload


class Channel:
    """One end of a framed stream over a unix socket.

    Blocking until ``attach(loop)``; then non-blocking, read by a loop reader, with writes that do
    not fit the socket buffer kept in ``_out`` and flushed by a loop writer.
    """

    def __init__(self, sock: socket.socket, on_message: Callable[[Any], None],
                 on_lost: Callable[[str], None]) -> None:
        self.sock, self._fd = sock, sock.fileno()
        self._on_message, self._on_lost = on_message, on_lost
        self._loop: asyncio.AbstractEventLoop | None = None
        self._in = b""
        self._out = bytearray()
        self.closed = False

    @property
    def attached(self) -> bool:
        return self._loop is not None

    @property
    def backlog(self) -> int:
        """Bytes waiting for the socket buffer (a slow reader)."""
        return len(self._out)

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        if self.closed or self._loop is not None:
            return
        self.sock.setblocking(False)
        self._loop = loop
        loop.add_reader(self._fd, self._readable)
        if self._out:
            loop.add_writer(self._fd, self._writable)

    def pause(self) -> None:
        """Stop reading (a draining writer takes no more records); sending still works."""
        if self._loop is not None and not self.closed:
            self._loop.remove_reader(self._fd)

    def detach(self) -> None:
        """Back to blocking use (``close()`` without a running loop)."""
        if self._loop is not None and not self.closed:
            with contextlib.suppress(Exception):  # the loop may be closed already
                self._loop.remove_reader(self._fd)
                self._loop.remove_writer(self._fd)
        self._loop = None
        if not self.closed:
            self.sock.setblocking(True)
            if self._out:
                out, self._out = bytes(self._out), bytearray()
                self._sendall(out)

    def send(self, message: tuple[Any, ...]) -> None:
        if self.closed:
            return
        header, payload = encode(message)
        if self._loop is None:
            self._sendall(header + payload)
            return
        if self._out:
            self._out += header
            self._out += payload
            return
        try:
            sent = self.sock.sendmsg((header, payload))
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as exc:
            self.lose(f"send failed: {exc}")
            return
        if sent < len(header) + len(payload):
            self._out += (header + payload)[sent:]
            self._loop.add_writer(self._fd, self._writable)

    def _sendall(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except OSError as exc:
            self.lose(f"send failed: {exc}")

    def _writable(self) -> None:
        try:
            sent = self.sock.send(self._out)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self.lose(f"send failed: {exc}")
            return
        del self._out[:sent]
        if not self._out and self._loop is not None:
            self._loop.remove_writer(self._fd)

    def _readable(self) -> None:
        try:
            data = self.sock.recv(_RECV)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self.lose(str(exc))
            return
        if not data:
            self.lose("connection closed by the other end")
            return
        self.feed(data)

    def receive(self, timeout: float | None) -> bool:
        """Blocking: read once (up to ``timeout``) and dispatch what arrived; False at EOF/error."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(_RECV)
        except TimeoutError:
            return True
        except OSError as exc:
            self.lose(str(exc))
            return False
        if not data:
            self.lose("connection closed by the other end")
            return False
        self.feed(data)
        return not self.closed

    def feed(self, data: bytes) -> None:
        if self._in:
            data, self._in = self._in + data, b""
        view, size, pos = memoryview(data), len(data), 0
        while size - pos >= 4:
            (length,) = _HEADER.unpack_from(data, pos)
            if length > MAX_FRAME:
                self.lose(f"frame of {length} bytes refused")
                return
            end = pos + 4 + length
            if end > size:
                break
            try:
                message = pickle.loads(view[pos + 4:end])
            except Exception as exc:
                self.lose(f"unreadable frame: {exc}")
                return
            pos = end
            try:
                self._on_message(message)
            except Exception:
                _log.exception("audit channel: message handling failed")
            if self.closed:
                return
        if pos < size:
            self._in = data[pos:]

    def lose(self, reason: str) -> None:
        if self.closed:
            return
        self.close()
        self._on_lost(reason)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._loop is not None:
            with contextlib.suppress(Exception):
                self._loop.remove_reader(self._fd)
                self._loop.remove_writer(self._fd)
        self.sock.close()


class RemoteUpkeep:
    """The writer process's retention and capacity view, as last pushed (``Upkeep.capacity``)."""

    def __init__(self, capacity: Any) -> None:
        self.capacity = capacity


def _dial(path: Path, timeout: float) -> tuple[socket.socket, Any]:
    """Blocking: connect and read the writer's hello, retrying until ``timeout`` (writer starting)."""
    deadline = time.monotonic() + timeout
    delay, last = 0.01, "not tried"
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            sock.connect(str(path))
            hello = _read_one(sock)
            if hello[0] != HELLO:
                raise AuditError(f"unexpected first message {hello[0]!r}")
            sock.settimeout(None)
            return sock, hello
        except (OSError, AuditError, EOFError, pickle.UnpicklingError) as exc:
            sock.close()
            last = str(exc) or type(exc).__name__
        if time.monotonic() + delay >= deadline:
            raise AuditError(f"the audit writer process did not answer on {path} within {timeout:g} s "
                             f"({last}); it logs why it could not start")
        time.sleep(delay)
        delay = min(0.2, delay * 2)


def _read_one(sock: socket.socket) -> Any:
    header = _read_exactly(sock, 4)
    (length,) = _HEADER.unpack(header)
    if length > MAX_FRAME:
        raise AuditError(f"frame of {length} bytes refused")
    return pickle.loads(_read_exactly(sock, length))


def _read_exactly(sock: socket.socket, size: int) -> bytes:
    chunks, left = [], size
    while left:
        chunk = sock.recv(left)
        if not chunk:
            raise EOFError("connection closed by the audit writer")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


class RemoteAuditLog:
    """``AuditLog``'s surface over the writer process's socket (see the module docstring)."""

    def __init__(self, socket_path: Path, paths: AuditPaths, *, strict: bool) -> None:
        self.socket_path, self.paths, self.strict = socket_path, paths, strict
        self.waiting = 0  # strict appends awaiting their ack
        self.upkeep: RemoteUpkeep | None = None
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._chan: Channel | None = None
        self._ready = False  # connected and greeted by the writer
        self._lost_reason = "not connected"
        # This loop iteration's records: awaited ones (strict) with their futures, and loose ones.
        self._rows: list[Row] = []
        self._futures: list[asyncio.Future[None]] = []
        self._loose: list[Row] = []
        self._flush = False
        self._scheduled = False
        self._inflight: dict[int, list[asyncio.Future[None]]] = {}
        self._next_id = 0
        self._backlog: list[Row] = []  # relaxed records kept while the writer is unreachable
        self._dropped = 0
        self._stats = AuditStats(0, 0, None, 0.0, 0, -1, False, "not connected")
        self._health = AuditHealth(ok=False, ready=False, reason="not connected")
        self._reconnecting: asyncio.Task[None] | None = None
        self._bye: asyncio.Future[None] | None = None
        self._bye_seen = False

    @classmethod
    def connect(cls, settings: Settings, socket_path: Path, *, timeout: float = 10.0) -> RemoteAuditLog:
        """Connect to the writer (blocking, up to ``timeout`` while it starts); AuditError otherwise."""
        sock, hello = _dial(socket_path, timeout)
        log = cls(socket_path, audit_paths(settings), strict=settings.audit.mode == "strict")
        log._adopt(Channel(sock, log._on_message, log._on_lost))
        log._on_message(hello)
        with contextlib.suppress(RuntimeError):  # no running loop: attached at the first async call
            log._attach(asyncio.get_running_loop())
        return log

    @property
    def closed(self) -> bool:
        return self._closed

    # -- appending ------------------------------------------------------------------------------
    async def append(self, record: AuditRecord, *, flush: bool = False) -> None:
        """Strict: return once the writer process has committed the record. Relaxed: at once."""
        if self._closed:
            raise AuditError("audit log is closed")
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._attach(loop)
        if not self.strict:
            self._loose.append(record_row(record))
            self._schedule(loop)
            return
        if not self._ready:
            raise AuditError(self._unreachable())
        committed: asyncio.Future[None] = loop.create_future()
        self._rows.append(record_row(record))
        self._futures.append(committed)
        self._flush = self._flush or flush
        self._schedule(loop)
        self.waiting += 1
        try:
            await committed
        finally:
            self.waiting -= 1

    def append_nowait(self, record: AuditRecord) -> None:
        """Fire and forget (lifecycle events): never waits, whatever the mode."""
        if self._closed:
            raise AuditError("audit log is closed")
        self._loose.append(record_row(record))
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (a script): send now, blocking
            self._hand_over()
            return
        if self._loop is not loop:
            self._attach(loop)
        self._schedule(loop)

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._hand_over)

    def _hand_over(self) -> None:
        """End of a loop iteration: every record appended during it, in one frame."""
        self._scheduled = False
        rows, futures, loose = self._rows, self._futures, self._loose
        if not rows and not loose:
            return
        self._rows, self._futures, self._loose = [], [], []
        flush, self._flush = self._flush, False
        chan = self._chan
        if chan is None or not self._ready:
            error = AuditError(self._unreachable())
            for future in futures:
                if not future.done():
                    future.set_exception(error)
            self._keep(loose)
            return
        frame = 0
        if futures:
            self._next_id += 1
            frame = self._next_id
            self._inflight[frame] = futures
        chan.send((RECORDS, frame, flush, rows, loose))  # a failure calls _on_lost, which fails them

    def _keep(self, loose: list[Row]) -> None:
        room = MAX_BACKLOG - len(self._backlog)
        if room < len(loose):
            self._dropped += len(loose) - max(0, room)
            loose = loose[:max(0, room)]
        self._backlog.extend(loose)

    # -- the connection -------------------------------------------------------------------------
    def _adopt(self, chan: Channel) -> None:
        self._chan, self._ready, self._bye_seen = chan, False, False

    def _attach(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._loop is None:
            self._loop = loop
        if self._chan is not None and not self._chan.attached and self._loop is loop:
            self._chan.attach(loop)
        if self._chan is None and self._reconnecting is None and not self._closed and self._loop is loop:
            self._reconnecting = loop.create_task(self._reconnect())

    def _on_message(self, message: Any) -> None:
        kind = message[0]
        if kind == ACK:
            _, frame, errors, state = message
            self._settle(self._inflight.pop(frame, ()), errors)
            if state is not None:
                self._set_state(state)
        elif kind == STATE:
            self._set_state(message[1])
        elif kind == HELLO:
            self._greeted(message[1])
        elif kind == BYE_OK:
            self._bye_seen = True
            if self._bye is not None and not self._bye.done():
                self._bye.set_result(None)

    @staticmethod
    def _settle(futures: Iterable[asyncio.Future[None]], errors: list[str | None] | None) -> None:
        for i, future in enumerate(futures):
            if future.done():  # its appender was cancelled
                continue
            error = errors[i] if errors is not None else None
            if error is None:
                future.set_result(None)
            else:
                future.set_exception(AuditError(error))

    def _greeted(self, state: State) -> None:
        self._set_state(state)
        if self._lost_reason != "not connected":
            _log.info("audit writer process connected again")
        self._ready, self._lost_reason = True, "not connected"
        if self._backlog:  # relaxed records kept while the writer was away
            backlog, self._backlog = self._backlog, []
            self._loose[:0] = backlog
            if self._loop is not None:
                self._schedule(self._loop)

    def _set_state(self, state: State) -> None:
        self._stats, self._health, capacity = state
        if capacity is not None:
            if self.upkeep is None:
                self.upkeep = RemoteUpkeep(capacity)
            else:
                self.upkeep.capacity = capacity

    def _on_lost(self, reason: str) -> None:
        was_ready = self._ready
        self._chan, self._ready, self._lost_reason = None, False, reason
        inflight, self._inflight = self._inflight, {}
        error = AuditError(f"audit writer process connection lost before the commit was confirmed: {reason}")
        for futures in inflight.values():
            for future in futures:
                if not future.done():
                    future.set_exception(error)
        if self._bye is not None and not self._bye.done():
            self._bye.set_exception(AuditError(reason))
        if self._closed:
            return
        if was_ready:
            _log.warning("audit writer process connection lost (%s): reconnecting", reason)
        if self._loop is not None and self._reconnecting is None and not self._loop.is_closed():
            self._reconnecting = self._loop.create_task(self._reconnect())

    async def _reconnect(self) -> None:
        """Back-off dialling while the writer restarts; ready again at its hello."""
        loop = asyncio.get_running_loop()
        delay = 0.02
        try:
            while not self._closed and self._chan is None:
                await asyncio.sleep(delay)
                delay = min(0.5, delay * 2)
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.setblocking(False)
                try:
                    await loop.sock_connect(sock, str(self.socket_path))
                except OSError as exc:
                    sock.close()
                    self._lost_reason = f"reconnecting: {exc}"
                    continue
                if self._closed:
                    sock.close()
                    return
                chan = Channel(sock, self._on_message, self._on_lost)
                self._adopt(chan)
                chan.attach(loop)
        finally:
            self._reconnecting = None

    def _unreachable(self) -> str:
        if self._chan is not None:
            return "audit writer process not ready yet (it is starting)"
        return f"audit writer process unreachable ({self._lost_reason})"

    # -- closing --------------------------------------------------------------------------------
    async def aclose(self) -> None:
        """Hand over what is left, wait until the writer has it (and strict acks), disconnect."""
        if self._closed:
            return
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._attach(loop)
        self._closed = True
        self._hand_over()
        chan = self._chan
        if chan is not None and self._ready and chan.attached:
            self._bye = loop.create_future()
            pending = [f for futures in self._inflight.values() for f in futures]
            chan.send((BYE,))
            with contextlib.suppress(AuditError, TimeoutError):
                await asyncio.wait_for(asyncio.gather(self._bye, *pending, return_exceptions=True),
                                       CLOSE_TIMEOUT_S)
        self._shut()

    def close(self) -> None:
        """Blocking ``aclose`` for code without a running event loop."""
        if self._closed:
            return
        self._closed = True
        self._hand_over()
        chan = self._chan
        if chan is not None and self._ready:
            chan.detach()
            chan.send((BYE,))
            deadline = time.monotonic() + CLOSE_TIMEOUT_S
            while not self._bye_seen and not chan.closed and time.monotonic() < deadline:
                chan.receive(max(0.01, deadline - time.monotonic()))
        self._shut()

    def _shut(self) -> None:
        if self._reconnecting is not None:
            self._reconnecting.cancel()
            self._reconnecting = None
        if self._chan is not None:
            self._chan.close()
            self._chan = None
        self._ready = False
        if self._backlog:
            self._dropped += len(self._backlog)
            _log.error("audit log closed with %d relaxed records the writer process never received",
                       len(self._backlog))
            self._backlog = []

    # -- figures --------------------------------------------------------------------------------
    def stats(self) -> AuditStats:
        """The writer process's figures as last pushed, plus what this process still holds."""
        stats = self._stats
        local = len(self._rows) + len(self._loose) + len(self._backlog)
        if local or self._dropped or not self._ready:
            stats = dataclasses.replace(
                stats, records_pending=stats.records_pending + local,
                records_dropped=stats.records_dropped + self._dropped,
                healthy=stats.healthy and self._ready,
                last_error=stats.last_error if self._ready else self._unreachable())
        return stats

    def health(self) -> AuditHealth:
        """Can a record be committed now? Not ready only in strict mode (see ``AuditHealth``)."""
        if self._closed:
            return AuditHealth(ok=False, ready=False, reason="audit log is closed")
        if not self._ready:
            return AuditHealth(ok=False, ready=not self.strict, reason=self._unreachable())
        return self._health
