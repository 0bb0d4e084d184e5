"""Audit keys: where they are found, how they are stored, created and rotated.

Both files are text (an operator can inspect or copy them in a terminal) with mode 0600:

* ``audit.key`` — the AES-256 keyring: one key per line as 64 hex digits (32 random bytes);
  ``#`` comments and blank lines are ignored. The **last** key is the active one; earlier lines
  are retired keys kept so old records stay readable. A key's id is the first 16 hex digits of
  ``SHA-256("appliance-audit-key-id:" + key)``: it names the key in every row without revealing it.
* ``audit-signing.key`` — the Ed25519 checkpoint key: one line, the 32-byte private seed in hex.

Reading looks in order at the explicit setting (``audit.key_file`` / ``audit.signing_key_file``),
``$CREDENTIALS_DIRECTORY/<name>`` (systemd ``LoadCredential=``) and ``<state_dir>/keys/<name>``.
Writing (``init-keys``, ``rotate-key``) goes to the explicit setting or ``<state_dir>/keys/``,
never to the credentials directory, which systemd fills read-only from the source file.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import stat
from collections.abc import Mapping
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from appliance.audit.model import AuditKeyError
from appliance.config import Settings
from appliance.system.privatefiles import write_private

KEY_FILE = "audit.key"
SIGNING_KEY_FILE = "audit-signing.key"
_KEY_BYTES = 32
_log = logging.getLogger(__name__)


def key_id(key: bytes) -> str:
    """Short public name of a key (a hash of it; 64 bits, enough to tell a handful of keys apart)."""
    return hashlib.sha256(b"appliance-audit-key-id:" + key).hexdigest()[:16]


class Keyring:
    """The AES keys of the log, oldest first; the last one seals new records."""

    __slots__ = ("_ciphers", "active_id", "source")

    def __init__(self, keys: list[bytes], source: Path) -> None:
        if not keys:
            raise AuditKeyError(f"audit key file {source} holds no key")
        self._ciphers = {key_id(k): AESGCM(k) for k in keys}
        self.active_id = key_id(keys[-1])
        self.source = source

    @property
    def ids(self) -> list[str]:
        return list(self._ciphers)

    def cipher(self, kid: str) -> AESGCM:
        try:
            return self._ciphers[kid]
        except KeyError:
            raise AuditKeyError(f"key id {kid} is not in the audit keyring {self.source} "
                                f"(it holds {', '.join(self._ciphers)})") from None

    def __contains__(self, kid: object) -> bool:
        return kid in self._ciphers


def _parse_hex_lines(text: str, source: Path, what: str) -> list[bytes]:
    keys = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            value = bytes.fromhex(line)
        except ValueError:
            raise AuditKeyError(f"{what} {source}, line {number}: not hexadecimal") from None
        if len(value) != _KEY_BYTES:
            raise AuditKeyError(f"{what} {source}, line {number}: {len(value)} bytes, expected "
                                f"{_KEY_BYTES} (64 hex digits)")
        keys.append(value)
    return keys


def _read_secret(path: Path, what: str) -> str:
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="ascii")
    except FileNotFoundError:
        raise AuditKeyError(f"{what} {path} does not exist; run `appliance audit init-keys`") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise AuditKeyError(f"{what} {path} cannot be read: {exc}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        _log.warning("%s %s is readable by group or others (mode %o); chmod 600 it",
                     what, path, stat.S_IMODE(mode))
    return text


def load_keyring(path: Path) -> Keyring:
    return Keyring(_parse_hex_lines(_read_secret(path, "audit key file"), path, "audit key file"), path)


def load_signing_key(path: Path) -> Ed25519PrivateKey:
    seeds = _parse_hex_lines(_read_secret(path, "audit signing key"), path, "audit signing key")
    if len(seeds) != 1:
        raise AuditKeyError(f"audit signing key {path} must hold exactly one key, found {len(seeds)}")
    return Ed25519PrivateKey.from_private_bytes(seeds[0])


def public_key_hex(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex()


def _default_path(settings: Settings, name: str) -> Path:
    return settings.server.state_dir / "keys" / name


def resolve_read_path(settings: Settings, name: str, env: Mapping[str, str] | None = None) -> Path:
    """The file to read ``name`` from, in the documented order; AuditKeyError when there is none."""
    configured = settings.audit.key_file if name == KEY_FILE else settings.audit.signing_key_file
    setting = "audit.key_file" if name == KEY_FILE else "audit.signing_key_file"
    if configured is not None:
        if not configured.exists():
            raise AuditKeyError(f"{setting} = {configured} does not exist")
        return configured
    env = os.environ if env is None else env
    looked = []
    creds = env.get("CREDENTIALS_DIRECTORY")
    if creds:
        candidate = Path(creds) / name
        if candidate.exists():
            return candidate
        looked.append(str(candidate))
    default = _default_path(settings, name)
    if default.exists():
        return default
    looked.append(str(default))
    raise AuditKeyError(f"audit key {name!r} not found (looked in {', '.join(looked)}); run "
                        f"`appliance audit init-keys`, or set audit.enabled = false to run without audit")


def write_path(settings: Settings, name: str) -> Path:
    """Where init-keys and rotate-key write ``name``: the setting or ``<state_dir>/keys/``."""
    configured = settings.audit.key_file if name == KEY_FILE else settings.audit.signing_key_file
    return configured if configured is not None else _default_path(settings, name)


def init_keys(settings: Settings) -> list[tuple[Path, bool]]:
    """Create the keyring and the signing key if absent; check them if present. Idempotent."""
    done = []
    for name, check, header in (
        (KEY_FILE, load_keyring, "# model-appliance audit keyring: last line is the active key"),
        (SIGNING_KEY_FILE, load_signing_key, "# model-appliance audit checkpoint signing key (Ed25519 seed)"),
    ):
        path = write_path(settings, name)
        created = not path.exists()
        if created:
            write_private(path, f"{header}\n{secrets.token_hex(_KEY_BYTES)}\n".encode())
        else:
            check(path)
        done.append((path, created))
    return done


def rotate_key(settings: Settings) -> tuple[Path, str, str]:
    """Append a fresh key to the keyring: it seals new records, the old ones stay for reading."""
    path = write_path(settings, KEY_FILE)
    old = load_keyring(path)
    text = path.read_text(encoding="ascii")
    if not text.endswith("\n"):
        text += "\n"
    fresh = secrets.token_bytes(_KEY_BYTES)
    write_private(path, (text + fresh.hex() + "\n").encode())
    return path, old.active_id, key_id(fresh)
