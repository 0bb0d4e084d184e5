"""Settings: TOML + APPLIANCE_* overrides into one typed tree; the docs table is generated from it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from appliance.config import ConfigError, Settings, load_settings, settings_table

ROOT = Path(__file__).resolve().parent.parent


def test_toml_and_environment_overrides(tmp_path: Path) -> None:
    path = tmp_path / "appliance.toml"
    path.write_text('[server]\nport = 9000\nmodels = "repo"\n[audit]\nmode = "relaxed"\n'
                    '[auth]\njwt_algorithms = ["ES256"]\n')
    settings = load_settings(path, env={"APPLIANCE_SERVER_PORT": "9100", "APPLIANCE_CACHE_TTL_S": "5",
                                        "APPLIANCE_BATCHING_ENABLED": "false", "OTHER": "x"})
    assert settings.server.port == 9100
    assert settings.server.models == tmp_path / "repo"  # relative to the file
    assert settings.audit.mode == "relaxed" and settings.cache.ttl_s == 5.0
    assert settings.batching.enabled is False and settings.auth.jwt_algorithms == ["ES256"]


@pytest.mark.parametrize(("text", "env", "fragment"), [
    ("[server]\nport = 'x'\n", {}, "server.port"),
    ("[server]\nnope = 1\n", {}, "unknown key"),
    ("[nope]\n", {}, "unknown configuration section"),
    ("[audit]\nmode = 'sometimes'\n", {}, "audit.mode"),
    ("[server]\nport = 70000\n", {}, "between 0 and 65535"),
    ("[limits]\nmax_queue = -1\n", {}, "negative"),
    ("not toml [", {}, "appliance.toml"),
    ("", {"APPLIANCE_BATCHING_ENABLED": "maybe"}, "batching.enabled"),
])
def test_invalid_configuration_names_the_key(tmp_path: Path, text: str, env: dict[str, str], fragment: str) -> None:
    path = tmp_path / "appliance.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=fragment):
        load_settings(path, env=env)


def test_defaults_are_safe() -> None:
    settings = Settings()
    assert settings.server.host == "127.0.0.1"
    assert settings.audit.enabled and settings.audit.mode == "strict"
    assert "none" not in [a.lower() for a in settings.auth.jwt_algorithms]


def test_configuration_docs_are_generated_from_the_settings() -> None:
    assert settings_table() in (ROOT / "docs" / "configuration.md").read_text()


def test_cli_help_is_fast_and_lists_the_commands() -> None:
    result = subprocess.run([sys.executable, "-m", "appliance", "--help"], capture_output=True, text=True,
                            timeout=60, check=True)
    for command in ("serve", "optimize", "audit", "keys", "models", "config"):
        assert command in result.stdout
    heavy = subprocess.run([sys.executable, "-c", "import sys, appliance.cli as c; c.build_parser(); "
                            "print(sorted(m for m in ('openvino', 'nncf', 'onnxruntime') if m in sys.modules))"],
                           capture_output=True, text=True, timeout=60, check=True)
    assert heavy.stdout.strip() == "[]"
