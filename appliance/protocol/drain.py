"""Stopping the HTTP front end so that every client gets an answer (200 or 503) or a refused
connection, never a reset or a connection closed under a request it has already sent.

The sequence, on SIGTERM:

1. The service starts draining: readiness and new inference requests answer 503, and every
   answer sent from now on carries ``Connection: close`` (``close_when_draining``), so a client
   does not send another request down a connection the server is about to close.
2. The listening sockets drop new SYNs (``appliance.system.listeners``); the clients retry and,
   once the sockets are closed, are refused. Connections already in the accept queue are still
   accepted and answered.
3. Wait, within the grace period, until the admitted requests are done, the accept queues are
   empty, and either no connection is left or no request has arrived for ``QUIET_S`` (an idle
   keep-alive connection has had its chance to send the request it may have in flight).
4. ``runner.cleanup()`` closes the sockets, then the idle connections, and waits for any
   request still being handled.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time

from aiohttp import web

from appliance.appkeys import SERVICE
from appliance.system.listeners import accept_queue, refuse_new_connections

log = logging.getLogger("appliance")
QUIET_S = 0.25  # no new request for this long: the connections left are idle, not about to send
_POLL_S = 0.01


def close_when_draining(request: web.Request, response: web.StreamResponse) -> None:
    """Called for every response: while draining, tell the client this connection ends here."""
    if request.app[SERVICE].draining:
        response.force_close()


async def drain(runner: web.AppRunner, listeners: list[socket.socket], grace_s: float) -> bool:
    """Steps 1-4 above; True if everything settled within ``grace_s``."""
    deadline = time.monotonic() + grace_s
    for sock in listeners:
        refuse_new_connections(sock)
    # Turns `draining` on before its first await: no request is answered between the two steps.
    finished = await runner.app[SERVICE].drain(grace_s)
    settled = finished and await _settle(runner, listeners, deadline)
    await runner.cleanup()
    return settled


async def _settle(runner: web.AppRunner, listeners: list[socket.socket], deadline: float) -> bool:
    """Wait until the accept queues are empty and the connections left are closed or quiet."""
    server = runner.server
    if server is None:
        return True
    seen, quiet_since = server.requests_count, time.monotonic()
    while time.monotonic() < deadline:
        now = time.monotonic()
        if server.requests_count != seen:
            seen, quiet_since = server.requests_count, now
        queued = sum(accept_queue(sock)[0] for sock in listeners)
        if not queued and (not server.connections or now - quiet_since >= QUIET_S):
            return True
        await asyncio.sleep(_POLL_S)
    log.warning("drain grace period over", extra={"fields": {"connections": len(server.connections)}})
    return False
