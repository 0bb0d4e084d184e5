"""The shipped systemd unit: valid, and confined to an exposure score of at most 2.0.

``systemd-analyze`` works without systemd running (``--offline=true``); skipped where it is absent.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from deploy_testlib import INSTALL, UNIT

ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")
MAX_EXPOSURE = 2.0


def _directives(text: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.lstrip().startswith(("#", "[")):
            key, value = line.split("=", 1)
            found.setdefault(key.strip(), []).append(value.strip())
    return found


@needs_analyze
def test_exposure_is_at_most_two() -> None:
    result = subprocess.run([ANALYZE, "security", "--offline=true", "--no-pager", str(UNIT)],
                            capture_output=True, text=True, timeout=60)
    match = re.search(r"Overall exposure level for \S+: ([0-9.]+)", result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= MAX_EXPOSURE, result.stdout
    # The same bound through systemd-analyze's own gate (--threshold is on a 0-100 scale).
    gate = subprocess.run([ANALYZE, "security", "--offline=true", f"--threshold={int(MAX_EXPOSURE * 10)}",
                           str(UNIT)], capture_output=True, text=True, timeout=60)
    assert gate.returncode == 0, gate.stdout


@needs_analyze
def test_unit_verifies_clean(tmp_path: Path) -> None:
    # verify checks that ExecStart= exists; install.sh puts the program there, so point it at a
    # binary that exists here and verify everything else as shipped.
    copy = tmp_path / UNIT.name
    text = UNIT.read_text()
    assert "/opt/model-appliance/venv/bin/appliance serve" in text
    copy.write_text(text.replace("/opt/model-appliance/venv/bin/appliance", shutil.which("true") or "/bin/true"))
    result = subprocess.run([ANALYZE, "verify", "--man=no", str(copy)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stderr.strip() == "", result.stderr


def test_unit_has_the_required_confinement() -> None:
    unit = _directives(UNIT.read_text())
    expected = {
        "ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes", "PrivateDevices": "yes",
        "NoNewPrivileges": "yes", "CapabilityBoundingSet": "", "StateDirectory": "model-appliance",
        "ConfigurationDirectory": "model-appliance", "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
    }
    for key, value in expected.items():
        assert unit.get(key) == [value], key
    assert "@system-service" in unit["SystemCallFilter"]
    assert unit["User"] == ["model-appliance"]
    credentials = {value.split(":", 1)[0] for value in unit["LoadCredential"]}
    assert credentials == {"audit.key", "audit-signing.key", "model.key"}
    # OpenVINO's JIT cannot compile under MemoryDenyWriteExecute= (checked on a real boot):
    # it must not be switched on, or OpenVINO versions would be refused.
    assert "MemoryDenyWriteExecute" not in unit


def test_install_script_parses_and_documents_itself() -> None:
    assert subprocess.run(["bash", "-n", str(INSTALL)], timeout=30).returncode == 0
    usage = subprocess.run([str(INSTALL), "--help"], capture_output=True, text=True, timeout=30)
    assert usage.returncode == 0
    for option in ("--foreground", "--no-start", "--uninstall", "--purge", "--tls"):
        assert option in usage.stdout
    wrong = subprocess.run([str(INSTALL), "--no-such-option"], capture_output=True, text=True, timeout=30)
    assert wrong.returncode != 0 and "unknown option" in wrong.stderr


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
def test_shell_scripts_pass_shellcheck() -> None:
    scripts = [INSTALL, *sorted((UNIT.parents[1] / "tests" / "deploy" / "nspawn").glob("*.sh"))]
    result = subprocess.run(["shellcheck", *map(str, scripts)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout
