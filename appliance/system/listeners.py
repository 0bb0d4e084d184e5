"""Listening sockets that can stop taking new connections without resetting those already queued.

Closing a listening socket makes the kernel reset every connection still waiting in its accept
queue: clients that had connected and sent a request see ``ECONNRESET`` instead of an answer. To
drain, the server first attaches a classic BPF filter that drops new SYNs (the client retransmits,
and once the socket is closed its retry is refused), keeps accepting what is already queued, and
closes the socket only when the queue, read from ``TCP_INFO``, is empty. Linux only: elsewhere the
filter is not attached and the queue reads as empty, so a drain degrades to a plain close.
"""

from __future__ import annotations

import ctypes
import socket
import struct
import sys
from typing import Any

_SO_ATTACH_FILTER = 26  # <asm-generic/socket.h>; Python's socket module does not export it
_TCP_INFO_LEN = 32
# struct tcp_info: 8 one-byte fields, then u32 tcpi_rto, ato, snd_mss, rcv_mss, unacked, sacked.
# For a LISTEN socket the kernel reports the accept-queue length in tcpi_unacked and the backlog
# in tcpi_sacked (tcp_get_info()).
_TCP_INFO_QUEUE = struct.Struct("=24xII")


class _SockFilter(ctypes.Structure):
    _fields_ = (("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32))


class _SockFprog(ctypes.Structure):
    _fields_ = (("len", ctypes.c_uint16), ("filter", ctypes.POINTER(_SockFilter)))


# A TCP socket's filter sees the segment from its TCP header on: byte 13 holds the flags. Drop a
# segment with SYN set and ACK clear (a new connection); let the rest through, so the last ACK of a
# handshake already under way still lands in the accept queue and is answered.
_DROP_NEW_SYN = (
    (0x30, 0, 0, 13),          # ldb [13]            A = TCP flags
    (0x54, 0, 0, 0x12),        # and #0x12           keep SYN|ACK
    (0x15, 0, 1, 0x02),        # jeq #0x02, drop     SYN without ACK
    (0x06, 0, 0, 0),           # ret #0              drop
    (0x06, 0, 0, 0xFFFFFFFF),  # ret #-1             accept the whole segment
)


def listen_addresses(host: str | None, port: int) -> list[tuple[int, tuple[Any, ...]]]:
    """(family, address) of every address ``host`` resolves to for listening, as asyncio would."""
    found: list[tuple[int, tuple[Any, ...]]] = []
    for family, _, _, _, address in socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                                        flags=socket.AI_PASSIVE):
        if (family, address) not in found:
            found.append((family, address))
    return found


def open_listeners(host: str | None, port: int, backlog: int, *, reuse_port: bool = False) -> list[socket.socket]:
    """Bound, listening TCP sockets for every address ``host`` resolves to (as asyncio would):
    the server owns them, so it can filter and measure them while it drains. ``reuse_port``: join
    the port's ``SO_REUSEPORT`` group (one socket, and accept queue, per worker process)."""
    listeners: list[socket.socket] = []
    try:
        for family, address in listen_addresses(host, port):
            listeners.append(socket.create_server(address, family=family, backlog=backlog, reuse_port=reuse_port))
    except OSError:
        for sock in listeners:
            sock.close()
        raise
    return listeners


def refuse_new_connections(sock: socket.socket) -> bool:
    """Drop new SYNs to ``sock`` from now on; queued and half-open connections still get through.
    Returns False where the filter cannot be attached (not Linux), and nothing changes."""
    if not sys.platform.startswith("linux"):
        return False
    program = (_SockFilter * len(_DROP_NEW_SYN))(*(_SockFilter(*insn) for insn in _DROP_NEW_SYN))
    fprog = _SockFprog(len(_DROP_NEW_SYN), ctypes.cast(program, ctypes.POINTER(_SockFilter)))
    try:
        # The kernel copies the program during the call; `program` outlives it.
        sock.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_FILTER, bytes(fprog))
    except OSError:
        return False
    return True


def accept_queue(sock: socket.socket) -> tuple[int, int]:
    """(connections waiting to be accepted, the queue's limit) for a listening socket; (0, 0) where
    the kernel does not say (not Linux)."""
    if not sys.platform.startswith("linux"):
        return 0, 0
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_LEN)
    queued, limit = _TCP_INFO_QUEUE.unpack_from(info)
    return int(queued), int(limit)
