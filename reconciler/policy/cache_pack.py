"""The on-disk plan cache: one signed JSON pack of content-addressed entries.

Entries are keyed by digests of everything that makes their result (see
:mod:`reconciler.policy.incremental`), so the pack only ever holds results that
are still true for their key. It is one file rather than one per entry because
a warm plan reads every entry: one read and one parse of ~1 KB per resource
beats thousands of small files. The pack is written atomically (temporary file,
then rename), so a reader sees the old or the new pack, never half of one.

The pack is signed with HMAC-SHA256 under a random key kept in the user's own
cache folder, not next to the pack: a config repo that commits a forged
``.reconcile/cache/`` (e.g. claiming a file passes every policy) fails the check
on any machine and is ignored like a corrupted pack.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

import orjson

# Next to the default store (.reconcile/state.db) in the working folder; safe to delete.
DEFAULT_FOLDER = Path(".reconcile") / "cache"
# Bumped when the pack's own layout changes.
FORMAT = "6"
_SIGNATURE_LENGTH = 64  # hex SHA-256
# The packages whose code decides a validation's result: a change to any of them
# (a developer checkout keeps its version number) makes every entry stale.
_SOURCE_PACKAGES = ("config", "policy")


def context_digest() -> str:
    """The version the results belong to: package version, pack format and source code."""
    h = hashlib.sha256(f"{FORMAT}\0{metadata.version('reconciler')}\0".encode())
    package = Path(__file__).resolve().parent.parent
    for name in _SOURCE_PACKAGES:
        for path in sorted((package / name).rglob("*")):
            if path.suffix in (".py", ".yaml", ".yml") and path.is_file():
                h.update(path.relative_to(package).as_posix().encode() + b"\0")
                h.update(path.read_bytes())
    return h.hexdigest()


# Read once per process and folder: a warm plan signs or checks ~300 blobs (~6 ms of reads)
_KEYS: dict[Path, bytes] = {}


def _key() -> bytes:
    """The signing key, made on first use (readable by the user only)."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "reconciler"
    path = base / "plan-cache.key"
    key = _KEYS.get(path)
    if key is None:
        key = _KEYS[path] = _read_or_make(base, path)
    return key


def _read_or_make(base: Path, path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        pass
    base.mkdir(parents=True, exist_ok=True)
    key = secrets.token_bytes(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it first: use theirs
        return path.read_bytes()
    with os.fdopen(fd, "wb") as out:
        out.write(key)
    return key


def sign(body: bytes) -> bytes:
    return hmac.new(_key(), body, hashlib.sha256).hexdigest().encode()


def pack_path(folder: Path, context: str) -> Path:
    return folder / f"plan-{context[:32]}.json"


def read_pack(path: Path) -> dict[str, Any]:
    """The pack's entries, or empty ones if it is missing, forged, truncated or foreign."""
    empty: dict[str, Any] = {"files": {}, "namespaces": {}}
    try:
        raw = memoryview(path.read_bytes())  # slices without copying ~1 KB a resource
        signature, body = raw[:_SIGNATURE_LENGTH], raw[_SIGNATURE_LENGTH + 1:]
        if not hmac.compare_digest(signature, sign(body)):
            return empty
        pack = orjson.loads(body)
    except (OSError, orjson.JSONDecodeError):
        return empty
    if not (isinstance(pack, dict) and isinstance(pack.get("files"), dict)
            and isinstance(pack.get("namespaces"), dict)):
        return empty
    return pack


def write_pack(path: Path, pack: dict[str, Any]) -> None:
    """Replace the pack atomically; a cache that cannot be written is only slower."""
    try:
        body = orjson.dumps(pack)
    except orjson.JSONEncodeError:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # older packs (another version) are stale forever: keep one file
        for old in path.parent.glob("plan-*.json"):
            if old != path:
                old.unlink(missing_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".plan-", suffix=".tmp")
        with os.fdopen(fd, "wb") as out:
            out.write(sign(body) + b"\n")
            out.write(body)
        os.replace(tmp, path)
    except OSError:
        return
