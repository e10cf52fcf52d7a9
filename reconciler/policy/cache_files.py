"""Parsed files kept between runs, so a namespace's unchanged files are not parsed again.

A changed file re-runs every check of its namespace, and those checks need the
models of all the namespace's files: with 1 % of a repo's files changed, the
other files of the same namespaces were most of a warm plan's parsing. Each
file's resources (models and YAML documents) are kept here as one pickle per
file entry, named by the entry's content-addressed key (see
:mod:`reconciler.policy.incremental`), so a blob only ever holds the parse of
those very bytes by this very code. Unpickling them is ~10x cheaper than YAML
plus model validation.

A pickle runs code when loaded, so each one is signed like the pack (HMAC
under the user's own key, over the entry key and the body) and loaded only
after the signature checks out: a ``.reconcile/cache/`` committed to a config
repo, forged or copied, is never unpickled; a blob that fails is parsed again.
"""

from __future__ import annotations

import hmac
import os
import pickle
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from reconciler.policy.cache_pack import sign

FOLDER = "parsed"
_SIGNATURE_LENGTH = 64  # hex SHA-256, as the pack's


def load(folder: Path, key: str) -> Any | None:
    """The object kept for ``key``, or None if there is none or it is not ours."""
    try:
        raw = (folder / FOLDER / key).read_bytes()
    except OSError:
        return None
    signature, body = raw[:_SIGNATURE_LENGTH], raw[_SIGNATURE_LENGTH:]
    if not hmac.compare_digest(signature, sign(key.encode() + b"\0" + body)):
        return None
    try:
        return pickle.loads(body)  # signed by us: checked above
    except Exception:  # a blob of ours that no longer loads (e.g. a class moved)
        return None


def blob(value: Any) -> bytes | None:
    """``value`` as it will be kept: taken when parsed, before any check adds to it."""
    try:
        return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    except (pickle.PicklingError, TypeError, AttributeError):
        return None


def save(folder: Path, blobs: Iterable[tuple[str, bytes]]) -> None:
    """Keep each (key, blob); a cache that cannot be written is only slower.

    Written in place: a blob cut short fails its signature and is parsed again."""
    target = folder / FOLDER
    try:
        target.mkdir(parents=True, exist_ok=True)
        for key, body in blobs:
            (target / key).write_bytes(sign(key.encode() + b"\0" + body) + body)
    except OSError:
        return


def prune(folder: Path, keep: set[str]) -> None:
    """Delete the blobs of file entries the pack no longer holds."""
    try:
        names = os.listdir(folder / FOLDER)
    except OSError:
        return
    for name in names:
        if name not in keep:
            (folder / FOLDER / name).unlink(missing_ok=True)
