"""SIGTERM under load with a real subprocess server: every client gets an answer (200 or 503) or a
refused connection, never a reset or a connection closed in the middle of a request."""

from __future__ import annotations

import asyncio
import errno
import signal
import time
from collections import Counter
from pathlib import Path

import aiohttp
import pytest
from conftest import ServerProcess, start_server, stop_server
from server_testlib import eval_rows

CLIENTS = 32
LOAD_S = 1.0  # closed-loop load before SIGTERM
AFTER_S = 8.0  # each client's bound after SIGTERM: a dropped SYN is retried at +1 s, +3 s, +7 s
GRACE_S = 5.0


def _classify(error: BaseException) -> str:
    """One word per way a request can end without an HTTP answer."""
    if isinstance(error, aiohttp.ClientConnectorError) and error.os_error.errno == errno.ECONNREFUSED:
        return "refused"
    if isinstance(error, aiohttp.ServerDisconnectedError):
        return "disconnected"
    if isinstance(error, aiohttp.ClientOSError):
        return f"oserror:{errno.errorcode.get(error.errno or 0, error.errno)}"
    if isinstance(error, TimeoutError):
        return "timeout"
    return type(error).__name__


async def _client(url: str, body: dict, keep_alive: bool, stop_at: list[float], outcomes: Counter[str]) -> None:
    """A closed-loop client on one keep-alive connection, or a new connection per request (so that
    some connections are in the server's accept queue when SIGTERM comes); it stops at its first
    refusal (the server is gone) or at the bound after SIGTERM."""
    timeout = aiohttp.ClientTimeout(total=AFTER_S)
    connector = aiohttp.TCPConnector(limit=1, force_close=not keep_alive)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        while time.monotonic() < stop_at[0]:
            try:
                async with session.post(url, json=body, headers={"Cache-Control": "no-cache"}) as response:
                    await response.read()
                    closing = response.status != 503 or response.headers.get("Connection") == "close"
                    outcomes[str(response.status) if closing else "503 keep-alive"] += 1
            except (aiohttp.ClientError, TimeoutError) as error:
                outcome = _classify(error)
                outcomes[outcome] += 1
                if outcome == "refused":
                    return


async def _exit_delay(server: ServerProcess, signalled: float) -> float:
    """Seconds from SIGTERM to the server's exit (inf if it outlives the grace period)."""
    while server.process.poll() is None:
        if time.monotonic() - signalled > GRACE_S:
            return float("inf")
        await asyncio.sleep(0.01)
    return time.monotonic() - signalled


async def _load_then_sigterm(server: ServerProcess, body: dict) -> tuple[Counter[str], float]:
    """Outcomes of every request, and how long the server took to exit after SIGTERM."""
    outcomes: Counter[str] = Counter()
    stop_at = [float("inf")]
    url = f"{server.url}/v2/models/digits/infer"
    clients = [asyncio.create_task(_client(url, body, i % 2 == 0, stop_at, outcomes)) for i in range(CLIENTS)]
    await asyncio.sleep(LOAD_S)
    before_sigterm = outcomes["200"]
    server.process.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    stop_at[0] = signalled + AFTER_S
    exit_delay = await _exit_delay(server, signalled)
    await asyncio.gather(*clients)
    assert before_sigterm > CLIENTS, f"the load never got going: {outcomes}"
    return outcomes, exit_delay


@pytest.mark.parametrize("workers", ["1", "2"])
def test_sigterm_under_load_answers_or_refuses_never_resets(repository: Path, tmp_path: Path, workers: str) -> None:
    """With 2 workers the supervisor passes SIGTERM on and each worker drains its own socket."""
    server = start_server(repository, tmp_path / "state",
                          extra_env={"APPLIANCE_SERVER_DRAIN_GRACE_S": str(GRACE_S),
                                     "APPLIANCE_SERVER_WORKERS": workers})
    try:
        x, _ = eval_rows(repository, 1)
        body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 64], "data": x.ravel().tolist()}]}
        outcomes, exit_delay = asyncio.run(_load_then_sigterm(server, body))
        print(f"outcomes {dict(outcomes)}; exited {exit_delay:.2f} s after SIGTERM")
        assert exit_delay < GRACE_S and server.process.wait(1) == 0
        assert set(outcomes) <= {"200", "429", "503", "refused"}, dict(outcomes)  # an answer or a refusal, no reset
        assert outcomes["refused"] == CLIENTS, dict(outcomes)
    finally:
        stop_server(server)
