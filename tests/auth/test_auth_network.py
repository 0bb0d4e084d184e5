"""The real ``appliance serve`` process: it makes no outbound connection, and slow clients are cut off.

No outbound connection is proven two ways while real traffic flows (infer, metadata, status page,
metrics, refused credentials): ``strace`` records every connect/sendto/sendmsg system call of
every thread (native code included: runtimes, telemetry), and psutil samples the process's
sockets. Every peer must be a loopback address.
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
from auth_testlib import DIGITS_ROW, create_key

_STRACE = shutil.which("strace")
_ADDRESS = re.compile(r'(?:inet_addr\("([^"]+)"\)|inet_pton\(AF_INET6, "([^"]+)")')


@dataclass
class Served:
    process: subprocess.Popen[bytes]
    port: int
    key: str
    trace: Path | None
    log: Path

    def server_pid(self) -> int:
        if self.trace is None:
            return self.process.pid
        children = psutil.Process(self.process.pid).children()
        return children[0].pid if children else self.process.pid


def _strace_works() -> bool:
    if _STRACE is None:
        return False
    return subprocess.run([_STRACE, "-qq", "-e", "trace=none", "true"], capture_output=True).returncode == 0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def served(digits_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    folder = tmp_path_factory.mktemp("served")
    state = folder / "state"
    key = create_key(state, "ci", "infer,read")
    port = _free_port()
    command = [sys.executable, "-m", "appliance", "serve", "--models", str(digits_repository),
               "--state-dir", str(state), "--host", "127.0.0.1", "--port", str(port),
               "--grpc-port", str(_free_port())]  # gRPC on too: neither front end may call out
    trace = folder / "strace.txt" if _strace_works() else None
    if trace is not None:
        command = [str(_STRACE), "-f", "-qq", "-e", "trace=bind,connect,sendto,sendmsg", "-o", str(trace), *command]
    env = {**os.environ, "APPLIANCE_AUDIT_ENABLED": "false", "APPLIANCE_HTTP_KEEPALIVE_TIMEOUT_S": "1",
           "APPLIANCE_HTTP_READ_TIMEOUT_S": "1"}
    log = folder / "server.log"
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=folder)
    served = Served(process, port, key, trace, log)
    try:
        _wait_ready(served)
        yield served
    finally:
        _stop(served)


def _stop(served: Served) -> None:
    """SIGTERM the server itself (strace, its parent, would only detach), then reap both."""
    with contextlib.suppress(psutil.NoSuchProcess):
        psutil.Process(served.server_pid()).terminate()
    try:
        served.process.wait(30)
    except subprocess.TimeoutExpired:
        for pid in {served.server_pid(), served.process.pid}:
            with contextlib.suppress(psutil.NoSuchProcess):
                psutil.Process(pid).kill()
        served.process.wait()


def _wait_ready(served: Served) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if served.process.poll() is not None:
            raise RuntimeError(f"server exited: {served.log.read_text()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{served.port}/v2/health/ready", timeout=2):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(served.log.read_text())


def _request(served: Served, path: str, body: dict | None = None, key: str | None = None) -> int:
    headers = {"Content-Type": "application/json", **({"X-API-Key": key} if key else {})}
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"http://127.0.0.1:{served.port}{path}", data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def _peers(pid: int) -> list[str]:
    """Remote addresses of the inet sockets, not listening ones, of the server and its worker processes
    (``server.workers`` is ``auto`` here: the supervisor holds no connection, its workers do)."""
    root = psutil.Process(pid)
    return [c.raddr.ip for process in (root, *root.children(recursive=True))
            for c in process.net_connections(kind="inet") if c.status != psutil.CONN_LISTEN and c.raddr]


def _is_loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    return ip.is_loopback or (isinstance(ip, ipaddress.IPv6Address) and bool(ip.ipv4_mapped)
                              and ip.ipv4_mapped.is_loopback) or ip.is_unspecified


def test_no_outbound_connection(served: Served) -> None:
    pid = served.server_pid()
    seen: list[str] = []
    for round_ in range(20):
        assert _request(served, "/v2/models/digits/infer", DIGITS_ROW, served.key) == 200
        assert _request(served, "/v2/models/digits", key=served.key) == 200
        assert _request(served, "/v2", key="mak_wrong") == 401
        if round_ % 5 == 0:
            for path in ("/metrics", "/", "/v2/status", "/openapi.json"):
                _request(served, path, key=served.key)
        # A keep-alive connection held open while the snapshot is taken, so there is one to see.
        with contextlib.closing(http.client.HTTPConnection("127.0.0.1", served.port, timeout=10)) as held:
            held.request("GET", "/v2/health/live")
            held.getresponse().read()
            seen += _peers(pid)
    assert seen and all(_is_loopback(a) for a in seen), seen
    if served.trace is None:
        pytest.skip("strace is not available: only the socket snapshots were checked")
    text = served.trace.read_text()
    assert re.search(rf"bind\(\d+, \{{sa_family=AF_INET, sin_port=htons\({served.port}\)", text), \
        "the trace did not see the listening socket"
    calls = [line for line in text.splitlines() if re.search(r"\b(connect|sendto|sendmsg)\(", line)]
    outbound = [line for line in calls if any(not _is_loopback(a or b) for a, b in _ADDRESS.findall(line))]
    assert not outbound, "\n".join(outbound)


def test_slow_headers_are_cut_off(served: Served) -> None:
    """A slow-loris client sending its request line and headers a byte at a time is disconnected
    after http.keepalive_timeout_s (1 s here), however steadily it trickles."""
    request = f"GET /v2 HTTP/1.1\r\nHost: x\r\nX-API-Key: {served.key}\r\nX-Padding: {'a' * 200}\r\n\r\n".encode()
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", served.port), timeout=5) as sock:
        closed = False
        for byte in request:
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                closed = True
                break
            time.sleep(0.02)
            if time.monotonic() - started > 4:
                break
        if not closed:
            sock.settimeout(3)
            try:
                closed = sock.recv(1024) == b""
            except OSError:
                closed = True
    elapsed = time.monotonic() - started
    assert closed and elapsed < 4, f"connection still open after {elapsed:.1f}s"


def test_slow_body_gets_408(served: Served) -> None:
    body = json.dumps(DIGITS_ROW).encode()
    head = (f"POST /v2/models/digits/infer HTTP/1.1\r\nHost: x\r\nX-API-Key: {served.key}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", served.port), timeout=5) as sock:
        sock.sendall(head + body[:10])
        sock.settimeout(4)
        reply = sock.recv(4096)
    assert reply.startswith(b"HTTP/1.1 408"), reply[:200]
    assert b"read_timeout" in reply or b"did not arrive" in reply
    assert time.monotonic() - started < 3
