"""The audit writer process: workers' strict records are acknowledged only once committed there.

Real processes throughout: the writer is ``python -m appliance.audit.process``, the clients are
this file run as a script (``client`` below), each with a ``RemoteAuditLog``; kills are SIGKILL.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from audit_testlib import check, make_settings, record

from appliance.audit import AuditError, audit_paths, open_audit_log
from appliance.audit.process import bind_listener
from appliance.audit.remote import RemoteAuditLog
from appliance.config import Settings, load_settings

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve()


@pytest.fixture
def run_dir() -> Iterator[Path]:
    """A short 0700 folder for the socket (a unix socket path must fit in 108 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="aw-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def write_config(tmp_path: Path, mode: str = "strict") -> tuple[Settings, Path]:
    settings = make_settings(tmp_path, mode=mode)
    config = tmp_path / "appliance.toml"
    config.write_text(f'[server]\nstate_dir = "{settings.server.state_dir}"\nlog_level = "warning"\n\n'
                      f'[audit]\nmode = "{mode}"\ngroup_commit_ms = 1.0\ncheckpoint_every = 10\n'
                      f'retention_check_interval_s = 0.2\n')
    return load_settings(config), config


class WriterProcess:
    def __init__(self, config: Path, sock: Path, log: Path) -> None:
        self.config, self.sock, self.log = config, sock, log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "appliance.audit.process", "--config", str(self.config),
                 "--socket", str(self.sock)], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def stop(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=30)

    def ensure_dead(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.kill()


@pytest.fixture
def writers(run_dir: Path) -> Iterator[list[WriterProcess]]:
    started: list[WriterProcess] = []
    yield started
    for writer in started:
        writer.ensure_dead()


def start_writer(writers: list[WriterProcess], config: Path, run_dir: Path) -> WriterProcess:
    writer = WriterProcess(config, run_dir / "audit.sock", run_dir / "writer.log")
    writer.start()
    writers.append(writer)
    return writer


def start_client(config: Path, sock: Path, acks: Path, name: str, count: int, concurrency: int = 16,
                 *, keep_going: bool = False) -> subprocess.Popen[bytes]:
    args = [sys.executable, str(HERE), "client", str(config), str(sock), str(acks), name, str(count),
            str(concurrency), "1" if keep_going else "0"]
    return subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def acked(path: Path) -> list[str]:
    if not path.exists():
        return []
    return [line for line in path.read_text().splitlines() if line]


def stored_ids(settings: Settings) -> set[str]:
    """Request ids in the log (decrypted with the export reader)."""
    from appliance.audit.export import records
    from appliance.audit.keys import load_keyring

    keyring = load_keyring(settings.server.state_dir / "keys" / "audit.key")
    return {r["request_id"] for r in records(audit_paths(settings).database, keyring)}


def cli_verify(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "appliance", "audit", "verify", "--config", str(config)],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)


def wait_until(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def finish(proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    _, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err.decode()


# -- tests ------------------------------------------------------------------------------------------
def test_two_client_processes_strict_all_acked_records_committed(tmp_path: Path, run_dir: Path,
                                                                 writers: list[WriterProcess]) -> None:
    settings, config = write_config(tmp_path)
    writer = start_writer(writers, config, run_dir)
    clients = [start_client(config, writer.sock, tmp_path / f"acks-{n}", n, 300) for n in ("a", "b")]
    for proc in clients:
        finish(proc)
    acks = acked(tmp_path / "acks-a") + acked(tmp_path / "acks-b")
    assert len(acks) == 600
    assert set(acks) <= stored_ids(settings)  # committed while the writer still runs
    assert writer.stop() == 0
    report = check(settings)
    assert report.ok, report.problems
    assert report.rows == 600 and report.last_signed_seq == 600  # the drain signed the head
    result = cli_verify(config)
    assert result.returncode == 0, result.stdout + result.stderr


def test_kill_writer_while_clients_append_loses_no_acknowledged_record(
        tmp_path: Path, run_dir: Path, writers: list[WriterProcess]) -> None:
    settings, config = write_config(tmp_path)
    writer = start_writer(writers, config, run_dir)
    files = [tmp_path / "acks-a", tmp_path / "acks-b"]
    clients = [start_client(config, writer.sock, path, path.name, 400, keep_going=True) for path in files]
    wait_until(lambda: sum(len(acked(p)) for p in files) >= 150, 20, "acks before the kill")
    writer.kill()
    before = {line for p in files for line in acked(p)}
    time.sleep(0.2)  # clients see the loss; their strict appends fail meanwhile
    start_writer(writers, config, run_dir)
    for proc in clients:
        finish(proc)
    acks = {line for p in files for line in acked(p)}
    assert len(acks) >= 800 and before <= acks
    assert writers[-1].stop() == 0
    assert acks <= stored_ids(settings)
    report = check(settings)
    assert report.ok, report.problems
    result = cli_verify(config)
    assert result.returncode == 0, result.stdout + result.stderr


def test_killed_client_corrupts_nothing(tmp_path: Path, run_dir: Path, writers: list[WriterProcess]) -> None:
    settings, config = write_config(tmp_path)
    writer = start_writer(writers, config, run_dir)
    victim = start_client(config, writer.sock, tmp_path / "acks-v", "v", 100_000, concurrency=64)
    wait_until(lambda: len(acked(tmp_path / "acks-v")) >= 200, 20, "the victim's acks")
    victim.kill()
    victim.communicate()
    survivor = start_client(config, writer.sock, tmp_path / "acks-s", "s", 100)
    finish(survivor)
    assert writer.stop() == 0
    assert set(acked(tmp_path / "acks-v")) | set(acked(tmp_path / "acks-s")) <= stored_ids(settings)
    report = check(settings)
    assert report.ok, report.problems


async def test_relaxed_mode_and_lifecycle_records(tmp_path: Path, run_dir: Path,
                                                  writers: list[WriterProcess]) -> None:
    settings, config = write_config(tmp_path, mode="relaxed")
    writer = start_writer(writers, config, run_dir)
    log = await asyncio.to_thread(open_audit_log, settings, writer_socket=writer.sock)
    assert isinstance(log, RemoteAuditLog) and not log.strict
    await asyncio.gather(*(log.append(record(i)) for i in range(50)))
    log.append_nowait(record(50, action="server_stop"))
    assert log.waiting == 0 and log.health().ready
    for _ in range(100):  # the writer pushes its figures at least every half second
        if log.stats().records_written == 51:
            break
        await asyncio.sleep(0.05)
    assert log.stats().records_written == 51
    assert log.upkeep is not None and log.upkeep.capacity.database_bytes > 0
    await log.aclose()
    with pytest.raises(AuditError):
        await log.append(record(99))
    assert await asyncio.to_thread(writer.stop) == 0
    assert stored_ids(settings) == {f"req-{i}" for i in range(51)}
    assert check(settings).ok


async def test_writer_down_fails_strict_appends_until_it_is_back(tmp_path: Path, run_dir: Path,
                                                                 writers: list[WriterProcess]) -> None:
    settings, config = write_config(tmp_path)
    writer = start_writer(writers, config, run_dir)
    log = await asyncio.to_thread(RemoteAuditLog.connect, settings, writer.sock)
    await log.append(record(0))
    assert log.health().ready
    for _ in range(100):  # figures follow an ack within 50 ms
        if log.stats().records_written == 1:
            break
        await asyncio.sleep(0.01)
    assert log.stats().records_written == 1
    await asyncio.to_thread(writer.kill)
    for _ in range(100):
        if not log.health().ready:
            break
        await asyncio.sleep(0.02)
    health = log.health()
    assert not health.ready and not health.ok and "unreachable" in health.reason
    assert not log.stats().healthy
    with pytest.raises(AuditError):
        await log.append(record(1))
    writer = start_writer(writers, config, run_dir)
    for _ in range(500):
        if log.health().ready:
            break
        await asyncio.sleep(0.02)
    assert log.health().ready
    await asyncio.gather(*(log.append(record(i)) for i in range(2, 12)))
    await log.aclose()
    assert await asyncio.to_thread(writer.stop) == 0
    ids = stored_ids(settings)
    assert {f"req-{i}" for i in (0, *range(2, 12))} <= ids and "req-1" not in ids
    assert check(settings).ok


def test_blocking_use_without_an_event_loop(tmp_path: Path, run_dir: Path,
                                            writers: list[WriterProcess]) -> None:
    settings, config = write_config(tmp_path)
    writer = start_writer(writers, config, run_dir)
    log = RemoteAuditLog.connect(settings, writer.sock)
    log.append_nowait(record(0, action="server_start"))
    log.close()  # returns once the writer has the record
    assert writer.stop() == 0
    assert stored_ids(settings) == {"req-0"}


def test_socket_is_private_and_missing_keys_exit_3(tmp_path: Path, run_dir: Path,
                                                   writers: list[WriterProcess]) -> None:
    (run_dir / "stale.sock").touch()  # not a socket: left alone, bind fails
    with pytest.raises(OSError):
        bind_listener(run_dir / "stale.sock")
    listener = bind_listener(run_dir / "a.sock")
    listener.close()
    again = bind_listener(run_dir / "a.sock")  # a stale socket file is replaced
    assert stat.S_IMODE(os.stat(run_dir / "a.sock").st_mode) == 0o600
    again.close()
    settings, config = write_config(tmp_path)
    shutil.rmtree(settings.server.state_dir / "keys")
    writer = start_writer(writers, config, run_dir)
    assert writer.proc is not None and writer.proc.wait(timeout=30) == 3
    with pytest.raises(AuditError, match="did not answer"):
        RemoteAuditLog.connect(settings, writer.sock, timeout=0.3)


# -- the client process -----------------------------------------------------------------------------
async def _client(config: Path, sock: Path, acks: Path, name: str, count: int, concurrency: int,
                  keep_going: bool) -> None:
    """Append ``count`` strict records ``concurrency`` at a time; one line per acknowledged record.
    ``keep_going``: a failed append (writer down) is retried under a new id until ``count`` are acked."""
    settings = load_settings(config)
    log = open_audit_log(settings, writer_socket=sock)
    out = acks.open("a", buffering=1)
    next_id = 0
    done = 0

    async def one() -> None:
        nonlocal next_id, done
        while done < count and next_id < (count if not keep_going else 10 * count):
            i, next_id = next_id, next_id + 1
            request_id = f"{name}-{i}"
            try:
                await log.append(record(i, request_id=request_id))
            except AuditError:
                if not keep_going:
                    raise
                await asyncio.sleep(0.02)
                continue
            done += 1
            out.write(request_id + "\n")

    await asyncio.gather(*(one() for _ in range(concurrency)))
    await log.aclose()
    out.close()
    if done < count:
        raise SystemExit(f"only {done} of {count} acknowledged")


if __name__ == "__main__" and sys.argv[1:2] == ["client"]:
    cfg, path, ack_file, who, n, c, keep = sys.argv[2:9]
    main = _client(Path(cfg), Path(path), Path(ack_file), who, int(n), int(c), keep == "1")
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        asyncio.run(main)
    else:
        uvloop.run(main)
