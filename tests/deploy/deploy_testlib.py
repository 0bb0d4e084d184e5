"""Shared helpers for the deployment tests: a clean copy of the checkout, free ports, HTTP calls."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "systemd" / "model-appliance.service"
INSTALL = REPO / "install.sh"
NSPAWN_DIR = Path(__file__).resolve().parent / "nspawn"
# What a checkout holds that a fresh clone would not: never copied into a test install.
_LOCAL = shutil.ignore_patterns(".git", ".venv", "venv", "state", "build", "dist", "*.egg-info", "__pycache__",
                                ".pytest_cache", ".mypy_cache", ".ruff_cache", ".hypothesis", "test-artifacts")


def copy_checkout(target: Path) -> Path:
    """Copy the files git would carry (tracked and untracked-but-not-ignored) into ``target``."""
    target.mkdir(parents=True, exist_ok=True)
    try:
        listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO,
                                capture_output=True, check=True).stdout.split(b"\0")
    except (OSError, subprocess.CalledProcessError):
        shutil.copytree(REPO, target, ignore=_LOCAL, dirs_exist_ok=True)
        return target
    for raw in filter(None, listed):
        source = REPO / raw.decode()
        if source.is_file():
            destination = target / raw.decode()
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination)
    return target


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def call(url: str, key: str | None = None, body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method="POST" if data else "GET")
    request.add_header("Content-Type", "application/json")
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            raw = response.read()
            return response.status, json.loads(raw) if raw else {}
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        return exc.code, json.loads(raw) if raw.startswith(b"{") else {}


def wait_ready(base: str, timeout: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            if call(f"{base}/v2/health/ready")[0] == 200:
                return time.monotonic() - started
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{base} was not ready within {timeout} s")
