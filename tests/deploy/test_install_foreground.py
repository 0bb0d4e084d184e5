"""install.sh without systemd: a fresh venv from the system Python, the bundled model, a config
with keys 0600, then the server started from that config answers a real prediction.

Slow (pip installs the package and its dependencies into a new venv: about a minute with a warm
pip cache), so marked ``slow``.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
from pathlib import Path

import pytest
from deploy_testlib import call, copy_checkout, free_port, wait_ready

SYSTEM_PYTHON = Path("/usr/bin/python3")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(600),
    pytest.mark.skipif(not SYSTEM_PYTHON.exists() or subprocess.run(
        [str(SYSTEM_PYTHON), "-c", "import sys, venv; sys.exit(sys.version_info < (3, 11))"]).returncode != 0,
        reason="needs /usr/bin/python3 3.11+ with venv"),
]


def _digits_request(count: int = 16) -> tuple[dict, list[int]]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    rows = digits.data[:count].astype("float32")
    body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [count, 64], "data": rows.ravel().tolist()}]}
    return body, [int(t) for t in digits.target[:count]]


def test_foreground_install_then_serve(tmp_path: Path) -> None:
    src = copy_checkout(tmp_path / "src")
    home = tmp_path / "home"
    port, grpc_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("APPLIANCE_", "VIRTUAL_ENV"))}
    env["APPLIANCE_HOME"] = str(home)
    install = subprocess.run([str(src / "install.sh"), "--foreground", "--no-start", "--fp32-only",
                              "--port", str(port), "--grpc-port", str(grpc_port)], env=env, capture_output=True,
                             text=True, timeout=540)
    assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]

    venv_python = home / ".venv" / "bin" / "python"
    assert os.path.realpath(venv_python).startswith("/usr/"), "the venv must come from the system Python"
    config = home / "state" / "appliance.toml"
    assert config.is_file() and (home / "models" / "digits" / "1" / "manifest.json").is_file()
    secrets = [p for p in (home / "state" / "keys").iterdir()] + list((home / "state").glob("admin.key"))
    assert secrets, "no keys were generated"
    for secret in secrets:
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600, secret
    assert f"{home / '.venv' / 'bin' / 'appliance'} serve --config {config}" in install.stdout
    assert "[grpc]\n" in config.read_text() and f"gRPC:       127.0.0.1:{grpc_port}" in install.stdout

    admin = home / "state" / "admin.key"
    key = admin.read_text().strip() if admin.exists() else None
    server = subprocess.Popen([str(home / ".venv" / "bin" / "appliance"), "serve", "--config", str(config)],
                              env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, 120)
        if key:
            assert call(f"{base}/v2/models/digits")[0] == 401, "installed config must require a key"
        body, labels = _digits_request()
        status, answer = call(f"{base}/v2/models/digits/infer", key, body)
        assert status == 200, answer
        probabilities = answer["outputs"][0]["data"]
        predicted = [max(range(10), key=lambda j, i=i: probabilities[i * 10 + j]) for i in range(len(labels))]
        assert sum(p == t for p, t in zip(predicted, labels, strict=True)) >= len(labels) - 2, predicted
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            output, _ = server.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            output, _ = server.communicate()
    assert server.returncode == 0, output[-3000:]

    removed = subprocess.run([str(src / "install.sh"), "--foreground", "--uninstall", "--purge"], env=env,
                             capture_output=True, text=True, timeout=120)
    assert removed.returncode == 0, removed.stderr
    assert not (home / ".venv").exists() and not (home / "state").exists()
