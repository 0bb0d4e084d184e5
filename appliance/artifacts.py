"""Model artifacts encrypted at rest (AES-256-GCM), decrypted only in memory by the server.

``seal_version`` turns ``model.onnx`` into ``model.onnx.enc`` (12-byte nonce + ciphertext + tag,
the original file name as associated data, so sealed files cannot be swapped between names) and
rewrites the manifest: ``files`` now hashes the sealed files (checked before load as for any
version) and ``encryption`` records the algorithm, the key id and each file's original name and
plaintext SHA-256. The plaintext files are removed last, so a server reading the version at any
moment sees either the old manifest and files or the new ones.

The server's :class:`SealedArtifactReader` is the repository's ``ArtifactReader`` hook: plain
versions load from disk as before; sealed ones are decrypted into bytes handed to the runtime
(OpenVINO keeps reading its weight buffer: the runtime keeps it alive). A missing or wrong key,
or a tampered file, raises :class:`ManifestError` with the reason: that version is UNAVAILABLE,
the others keep serving. Compiled-model caching is off for such versions (a cached blob on disk
would be the model in the clear).

Key file: 64 hex digits (32 random bytes), ``#`` comments allowed, mode 0600. It is found at
``auth.model_key_file``, ``$CREDENTIALS_DIRECTORY/model.key`` (systemd ``LoadCredential=``) or
``<state_dir>/keys/model.key``, in that order.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from appliance.config import Settings
from appliance.system.privatefiles import write_private
from modelrepo import Manifest, ManifestError, read_manifest, sha256_bytes, verify_files

ALGORITHM = "AES-256-GCM"
KEY_NAME = "model.key"
SUFFIX = ".enc"
_NONCE = 12
_KEY_BYTES = 32


def key_id(key: bytes) -> str:
    """A public name for the key (a hash of it), recorded in manifests to tell keys apart."""
    return hashlib.sha256(b"appliance-model-key-id:" + key).hexdigest()[:16]


def key_candidates(settings: Settings, env: Mapping[str, str] | None = None) -> list[Path]:
    if settings.auth.model_key_file is not None:
        return [settings.auth.model_key_file]
    env = os.environ if env is None else env
    creds = env.get("CREDENTIALS_DIRECTORY")
    found = [Path(creds) / KEY_NAME] if creds else []
    return [*found, settings.server.state_dir / "keys" / KEY_NAME]


def read_key(path: Path) -> bytes:
    lines = [ln.split("#", 1)[0].strip() for ln in path.read_text(encoding="ascii").splitlines()]
    values = [ln for ln in lines if ln]
    try:
        key = bytes.fromhex(values[-1]) if len(values) == 1 else b""
    except ValueError:
        key = b""
    if len(key) != _KEY_BYTES:
        raise ManifestError(f"model key file {path} must hold one key of 64 hex digits")
    return key


def create_key(path: Path) -> bytes:
    key = secrets.token_bytes(_KEY_BYTES)
    write_private(path, f"# model-appliance model artifact key (AES-256); keep a copy\n{key.hex()}\n".encode())
    return key


def is_sealed(manifest: Manifest) -> bool:
    return "encryption" in manifest.extra


def seal_version(version_dir: Path, key: bytes) -> Manifest:
    """Encrypt every file of a version in place; returns the new manifest."""
    manifest = read_manifest(version_dir)
    if is_sealed(manifest):
        raise ManifestError(f"{version_dir} is already encrypted")
    problems = verify_files(version_dir, manifest)
    if problems:
        raise ManifestError("refusing to seal a version that fails its integrity check: " + "; ".join(problems))
    cipher = AESGCM(key)
    files, sealed_files = {}, {}
    for name in sorted(manifest.files):
        plain = (version_dir / name).read_bytes()
        nonce = secrets.token_bytes(_NONCE)
        sealed = nonce + cipher.encrypt(nonce, plain, name.encode())
        write_private(version_dir / (name + SUFFIX), sealed)
        os.chmod(version_dir / (name + SUFFIX), 0o644)  # the key is the secret, not the file
        files[name + SUFFIX] = sha256_bytes(sealed)
        sealed_files[name + SUFFIX] = {"name": name, "sha256": manifest.files[name]}
    manifest.extra["encryption"] = {"alg": ALGORITHM, "key_id": key_id(key), "files": sealed_files}
    new = Manifest.from_dict({**manifest.to_dict(), "files": files, "model_file": manifest.model_file + SUFFIX})
    new.write(version_dir)
    for name in manifest.files:
        (version_dir / name).unlink()
    return new


def open_sealed(version_dir: Path, manifest: Manifest, key: bytes) -> dict[str, bytes]:
    """Decrypt every sealed file of a version: original name → plaintext bytes."""
    info = _encryption(manifest)
    if info["key_id"] != key_id(key):
        raise ManifestError(f"encrypted with model key {info['key_id']}, but the configured key is "
                            f"{key_id(key)}: wrong key")
    cipher = AESGCM(key)
    plain: dict[str, bytes] = {}
    for sealed_name, entry in info["files"].items():
        data = (version_dir / sealed_name).read_bytes()
        try:
            content = cipher.decrypt(data[:_NONCE], data[_NONCE:], entry["name"].encode())
        except InvalidTag:
            raise ManifestError(f"{sealed_name} failed authentication: tampered, or sealed with another key") from None
        if sha256_bytes(content) != entry["sha256"]:
            raise ManifestError(f"{sealed_name}: decrypted content does not match its recorded sha256")
        plain[entry["name"]] = content
    return plain


def _encryption(manifest: Manifest) -> dict[str, Any]:
    info = manifest.extra.get("encryption")
    if (not isinstance(info, dict) or info.get("alg") != ALGORITHM or not isinstance(info.get("files"), dict)
            or not all(isinstance(v, dict) and "name" in v and "sha256" in v for v in info["files"].values())):
        raise ManifestError(f"unsupported or malformed 'encryption' block (expected alg {ALGORITHM})")
    return info


class SealedArtifactReader:
    """The repository's ``ArtifactReader``: None for plain versions (the runtime reads the files),
    decrypted (model bytes, weights bytes) for sealed ones."""

    def __init__(self, settings: Settings, env: Mapping[str, str] | None = None) -> None:
        self._settings, self._env = settings, env

    def __call__(self, version_dir: Path, manifest: Manifest) -> tuple[bytes, bytes | None] | None:
        if not is_sealed(manifest):
            return None
        plain = open_sealed(version_dir, manifest, self._key(manifest))
        entry = _encryption(manifest)["files"].get(manifest.model_file)
        if entry is None:
            raise ManifestError(f"model_file {manifest.model_file} is not among the encrypted files")
        model_name = entry["name"]
        weights = None
        if manifest.format == "openvino":
            weights = plain.get(str(Path(model_name).with_suffix(".bin")))
        return plain[model_name], weights

    def _key(self, manifest: Manifest) -> bytes:
        candidates = key_candidates(self._settings, self._env)
        for path in candidates:
            if path.is_file():
                return read_key(path)
        kid = _encryption(manifest).get("key_id", "?")
        raise ManifestError(f"encrypted with model key {kid}, but no model key is configured "
                            f"(looked at {', '.join(map(str, candidates))})")


def encrypt_command(models: Path, target: str, key_file: Path | None, config: Path | None,
                    state_dir: Path | None) -> int:
    """``appliance models encrypt NAME/VERSION``: find or create the key, seal, report."""
    import sys

    from appliance.config import load_settings

    name, _, version = target.partition("/")
    version_dir = models / name / version
    if not name or not version.isdigit() or not version_dir.is_dir():
        print(f"appliance models encrypt: {version_dir} is not a model version (NAME/VERSION)", file=sys.stderr)
        return 2
    from appliance.audit.admin import record_admin_action

    settings = load_settings(config)
    if state_dir is not None:
        settings = settings.replace("server", state_dir=state_dir)
    if key_file is None:
        key_file = next((p for p in key_candidates(settings) if p.is_file()), key_candidates(settings)[-1])
    if key_file.is_file():
        key = read_key(key_file)
    else:
        key = create_key(key_file)
        print(f"created model key {key_id(key)} at {key_file}: keep a copy, without it the model is lost",
              file=sys.stderr)
    try:
        manifest = seal_version(version_dir, key)
    except ManifestError as exc:
        print(f"appliance models encrypt: {exc}", file=sys.stderr)
        return 1
    record_admin_action(settings, "model_encrypt", f"sealed with model key {key_id(key)}", model=name,
                        version=version)
    print(f"sealed {target} with key {key_id(key)}: {', '.join(sorted(manifest.files))}")
    return 0
