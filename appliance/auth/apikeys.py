"""API keys: ``mak_<key id>_<secret>``, of which the server keeps only a hash.

Why SHA-256 and not a password hash (argon2, bcrypt): the secret is 256 bits from
``secrets.token_urlsafe``, not something a person chose, so a stolen store cannot be attacked by
guessing; a slow hash would only cost milliseconds on every request. The public key id in the
token finds the one record to check (a dict lookup, no scan over all hashes, no timing signal
about other keys); the hash is then compared with ``hmac.compare_digest``. Whether a key id
exists may show in timing, which is harmless: ids are 64-bit random and public, the secret is not.

Store (``auth.api_keys_file`` or ``<state_dir>/api-keys.json``, mode 0600, replaced atomically)::

    {"schema": 1, "keys": {"<key id>": {"name": "ci", "scopes": ["infer"], "models": ["digits"],
                                         "sha256": "...", "created_at": "...", "revoked_at": null}}}
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from appliance.auth.principal import SCOPES, Principal, ScopeError
from appliance.config import Settings
from appliance.system.privatefiles import write_private
from appliance.system.watchedfile import WatchedFile

PREFIX = "mak_"
_ID_HEX = 16  # 64-bit public key id
_STORE_SCHEMA = 1
_HASH_CONTEXT = b"appliance-api-key-v1:"


@dataclass(frozen=True, slots=True)
class KeyRecord:
    key_id: str
    name: str
    scopes: tuple[str, ...]
    models: tuple[str, ...] | None
    sha256: str
    created_at: str
    revoked_at: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "scopes": list(self.scopes), "models": list(self.models) if self.models else None,
                "sha256": self.sha256, "created_at": self.created_at, "revoked_at": self.revoked_at}

    def principal(self) -> Principal:
        return Principal(self.name, frozenset(self.scopes),
                         frozenset(self.models) if self.models else None, "api-key")


def store_path(settings: Settings) -> Path:
    return settings.auth.api_keys_file or settings.server.state_dir / "api-keys.json"


def digest(key_id: str, secret: str) -> str:
    return hashlib.sha256(_HASH_CONTEXT + key_id.encode() + b":" + secret.encode()).hexdigest()


def split_key(token: str) -> tuple[str, str] | None:
    """``(key id, secret)`` of a well-formed key, else None."""
    if len(token) < len(PREFIX) + _ID_HEX + 2 or not token.startswith(PREFIX):
        return None
    key_id, sep, secret = token[len(PREFIX):len(PREFIX) + _ID_HEX], token[len(PREFIX) + _ID_HEX], \
        token[len(PREFIX) + _ID_HEX + 1:]
    return (key_id, secret) if sep == "_" else None


def new_key(name: str, scopes: list[str], models: list[str] | None) -> tuple[str, KeyRecord]:
    """A fresh key (shown once) and the record that stores only its hash."""
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown or not scopes:
        raise ScopeError(f"scopes must be some of {', '.join(SCOPES)} (got {', '.join(scopes) or 'none'})")
    key_id = secrets.token_hex(_ID_HEX // 2)
    secret = secrets.token_urlsafe(32)
    created = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    record = KeyRecord(key_id, name, tuple(sorted(set(scopes))), tuple(sorted(set(models))) if models else None,
                       digest(key_id, secret), created)
    return f"{PREFIX}{key_id}_{secret}", record


def parse_store(data: bytes) -> dict[str, KeyRecord]:
    doc = json.loads(data)
    if not isinstance(doc, dict) or doc.get("schema") != _STORE_SCHEMA or not isinstance(doc.get("keys"), dict):
        raise ValueError(f"not an API-key store of schema {_STORE_SCHEMA}")
    records = {}
    for key_id, raw in doc["keys"].items():
        try:
            records[key_id] = KeyRecord(key_id, str(raw["name"]), tuple(raw["scopes"]),
                                        tuple(raw["models"]) if raw.get("models") else None,
                                        str(raw["sha256"]), str(raw.get("created_at", "")), raw.get("revoked_at"))
        except (KeyError, TypeError) as exc:
            raise ValueError(f"key {key_id}: malformed record ({exc})") from None
    return records


def read_store(path: Path) -> dict[str, KeyRecord]:
    try:
        return parse_store(path.read_bytes())
    except FileNotFoundError:
        return {}


def write_store(path: Path, records: dict[str, KeyRecord]) -> None:
    doc = {"schema": _STORE_SCHEMA, "keys": {k: r.to_json() for k, r in records.items()}}
    write_private(path, json.dumps(doc, indent=2).encode() + b"\n")


@contextlib.contextmanager
def locked_store(path: Path) -> Iterator[dict[str, KeyRecord]]:
    """Read-modify-write under an exclusive lock, so two ``keys`` commands never lose an update."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lock_fd = os.open(path.with_name(path.name + ".lock"), os.O_CREAT | os.O_RDWR, 0o600)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX)
        records = read_store(path)
        before = dict(records)
        yield records
        if records != before:
            write_store(path, records)
    finally:
        os.close(lock_fd)


class ApiKeyVerifier:
    """Checks presented keys against the store, re-read when the file changes (revocation)."""

    def __init__(self, path: Path, interval: float = 1.0) -> None:
        self._store: WatchedFile[dict[str, KeyRecord]] = WatchedFile(path, parse_store, {}, interval)
        self._store.reload()
        self._seen: object = None
        self._active: dict[str, tuple[str, Principal]] = {}  # key id -> (hash, principal)

    def _current(self) -> dict[str, tuple[str, Principal]]:
        """Active keys, rebuilt only when the store changed (the per-request path allocates nothing)."""
        records = self._store.current()
        if records is not self._seen:
            self._seen = records
            self._active = {k: (r.sha256, r.principal()) for k, r in records.items() if r.revoked_at is None}
        return self._active

    def has_keys(self) -> bool:
        return bool(self._current())

    def verify(self, token: str) -> Principal | None:
        """The key's principal, or None when the key is malformed, unknown, revoked or wrong."""
        parts = split_key(token)
        if parts is None:
            return None
        found = self._current().get(parts[0])
        if found is None or not hmac.compare_digest(digest(*parts), found[0]):
            return None
        return found[1]
