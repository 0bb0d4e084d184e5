"""The OS pieces of a drain on real loopback sockets: the accept-queue length read from TCP_INFO,
and the SYN filter that stops new connections while the queued ones are still accepted."""

from __future__ import annotations

import errno
import select
import socket
import sys
import time
from collections.abc import Iterator

import pytest

from appliance.system.listeners import accept_queue, open_listeners, refuse_new_connections

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="TCP_INFO and socket filters: Linux")
BACKLOG = 16


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    [sock] = open_listeners("127.0.0.1", 0, BACKLOG)
    yield sock
    sock.close()


def _connect_nonblocking(port: int) -> socket.socket:
    client = socket.socket()
    client.setblocking(False)
    assert client.connect_ex(("127.0.0.1", port)) == errno.EINPROGRESS
    return client


def _connect_result(client: socket.socket, timeout: float) -> int | None:
    """The connect's errno once it completes (0: connected), None if still pending."""
    _, writable, _ = select.select([], [client], [], timeout)
    return client.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) if writable else None


def test_accept_queue_counts_connections_waiting_to_be_accepted(listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    assert accept_queue(listener) == (0, BACKLOG)
    clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
    assert accept_queue(listener) == (3, BACKLOG)
    accepted, _ = listener.accept()
    assert accept_queue(listener)[0] == 2
    for sock in (accepted, *clients):
        sock.close()


def test_filter_holds_new_connections_and_lets_queued_ones_be_accepted(listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    queued = socket.create_connection(("127.0.0.1", port))
    queued.sendall(b"GET / HTTP/1.1\r\n\r\n")
    assert refuse_new_connections(listener)
    late = _connect_nonblocking(port)
    try:
        assert _connect_result(late, 0.3) is None  # its SYN was dropped: not connected, not refused
        assert accept_queue(listener)[0] == 1
        accepted, _ = listener.accept()  # the queued connection still arrives, request and all
        assert accepted.recv(64) == b"GET / HTTP/1.1\r\n\r\n"
        accepted.close()
        listener.close()
        # the retransmitted SYN (about 1 s later) now finds no listener: refused, not reset
        assert _connect_result(late, 5.0) == errno.ECONNREFUSED
    finally:
        late.close()
        queued.close()


def test_open_listeners_binds_each_address_once() -> None:
    listeners = open_listeners("127.0.0.1", 0, BACKLOG)
    try:
        assert [sock.getsockname()[0] for sock in listeners] == ["127.0.0.1"]
        with socket.create_connection(listeners[0].getsockname()[:2], timeout=2):
            deadline = time.monotonic() + 2
            while accept_queue(listeners[0])[0] != 1 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert accept_queue(listeners[0])[0] == 1
    finally:
        for sock in listeners:
            sock.close()
