"""install.sh on a machine where systemd is PID 1: boots systemd in a container, installs the
service with install.sh (TLS on), and gets predictions from the running, confined service.

The container (systemd-nspawn, Debian's ``systemd-container``) boots an overlay of this machine's
root with a tmpfs upper layer, so the host is untouched; see ``nspawn/boot_check.sh``. Skipped
where it cannot run (not root, no systemd-nspawn, no overlayfs); CI runs it as root. Bounded:
the container is killed after ``APPLIANCE_NSPAWN_TIMEOUT`` seconds and always torn down.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from deploy_testlib import NSPAWN_DIR, copy_checkout, free_port

TIMEOUT_S = 840


def _unavailable() -> str | None:
    if os.geteuid() != 0:
        return "needs root (mounts an overlay and boots a container)"
    if shutil.which("systemd-nspawn") is None:
        return "systemd-nspawn is not installed (Debian: apt-get install systemd-container)"
    if not Path("/usr/lib/systemd/systemd").exists() and not Path("/lib/systemd/systemd").exists():
        return "systemd is not installed in this root file system"
    if "overlay" not in Path("/proc/filesystems").read_text():
        return "the kernel has no overlayfs"
    return None


pytestmark = [pytest.mark.slow, pytest.mark.timeout(TIMEOUT_S + 60),
              pytest.mark.skipif(_unavailable() is not None, reason=str(_unavailable()))]


def _tail(path: Path, lines: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else "(none)"


def test_service_installs_starts_and_predicts(tmp_path: Path) -> None:
    src = copy_checkout(tmp_path / "src")
    out = tmp_path / "out"
    out.mkdir()
    env = {**os.environ, "APPLIANCE_NSPAWN_TIMEOUT": str(TIMEOUT_S - 20), "APPLIANCE_CHECK_PORT": str(free_port())}
    result = subprocess.run([str(NSPAWN_DIR / "boot_check.sh"), str(src), str(out)], env=env,
                            capture_output=True, text=True, timeout=TIMEOUT_S)
    status = (out / "status").read_text().strip() if (out / "status").exists() else "(no status)"
    details = "\n".join(f"--- {name}\n{_tail(out / name)}" for name in
                        ("inner.log", "install.log", "service.log", "console.log"))
    assert result.returncode == 0 and status == "ok", f"status {status}\n{result.stderr}\n{details}"

    figures = json.loads((out / "figures.json").read_text())
    assert figures["service_user"] == "model-appliance"
    assert figures["exposure_online"] <= 2.0
    first = json.loads((out / "query-first.json").read_text())
    assert first["auth"] and first["no_credentials_status"] == 401 and first["ok"]
    every = json.loads((out / "query-all.json").read_text())
    assert {p["runtime"] for p in every["predictions"]} == {"onnxruntime", "openvino"}
    print(f"nspawn figures: {json.dumps(figures, sort_keys=True)}")
