"""The hash chain over revisions (SPEC P4): what is hashed, and how it is checked.

Each revision's hash is ``sha256(prev_hash + canonical JSON of its content)``;
the first revision links to a genesis hash derived from the store's lineage,
so a chain copied from another store does not verify here. The content
covers every recorded field of the revision and, through the digests in its
change records, the resource bodies written with it.

Everything here is pure: the store feeds rows in, no database is touched.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from reconciler.config.desired import ResourceKey, canonical_json, digest_of
from reconciler.state.revisions import ChainCheck, Change, RevisionMeta

GENESIS_TAG = "reconciler.dev/history/v1"


def genesis_hash(lineage: str) -> str:
    return hashlib.sha256(f"{GENESIS_TAG}:{lineage}".encode()).hexdigest()


def change_record(change: Change, before_digest: str | None) -> dict[str, Any]:
    """The stored, hashed form of one change: identity, digests and field diffs.

    ``before_digest`` is what the store held when the change was written,
    which is the truth even if the plan's idea of ``before`` was different.
    Field values arrive already redacted from the plan and are kept as given.
    """
    after = digest_of(change.after.body()) if change.after is not None else None
    return {"action": change.action.value, **change.key._asdict(), "before": before_digest,
            "after": after, "fields": [f.to_json() for f in change.fields]}


def record_key(record: Mapping[str, Any]) -> ResourceKey:
    return ResourceKey(record["kind"], record["namespace"], record["name"])


def revision_content(
    number: int, created_at: datetime, meta: RevisionMeta, changes: list[dict[str, Any]]
) -> dict[str, Any]:
    content = {"number": number, "createdAt": created_at.isoformat(), **meta.to_json(),
               "changes": changes}
    if meta.credential_moves:
        # Only when there are some, so revisions written before S2 hash as they did.
        content["credentialMoves"] = [m.to_json() for m in meta.credential_moves]
    return content


def revision_hash(prev_hash: str, content: Mapping[str, Any]) -> str:
    return hashlib.sha256((prev_hash + canonical_json(content)).encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class StoredRevision:
    """One revision row as read back, plus the resource versions written with it."""

    number: int
    created_at: datetime
    meta: RevisionMeta
    changes_json: str
    prev_hash: str
    hash: str
    # key -> (stored body JSON or None for a deletion, stored digest)
    versions: Mapping[ResourceKey, tuple[str | None, str | None]] = field(default_factory=dict)


def _check_versions(rev: StoredRevision, records: list[dict[str, Any]]) -> str | None:
    expected = {record_key(r): r["after"] for r in records}
    for key in sorted(set(expected) | set(rev.versions)):
        if key not in rev.versions:
            return f"the stored version of {key} written by revision {rev.number} was removed"
        if key not in expected:
            return f"a version of {key} was added to revision {rev.number} afterwards"
        body, digest = rev.versions[key]
        actual = digest_of(json.loads(body)) if body is not None else None
        if actual != expected[key] or digest != expected[key]:
            return f"the stored version of {key} written by revision {rev.number} was edited"
    return None


def verify(
    lineage: str, rows: Iterable[StoredRevision], head: int, head_hash: str | None
) -> ChainCheck:
    """Check every revision in order; name the first one that does not hold.

    A row whose own hash is consistent but whose ``prev_hash`` does not match
    its predecessor means the predecessor was rewritten (hash recomputed), so
    the predecessor is the one reported.
    """
    prev_number, prev_hash = 0, genesis_hash(lineage)
    checked = 0
    for rev in rows:
        if rev.number != prev_number + 1:
            missing = prev_number + 1
            return ChainCheck(
                False, checked, missing,
                f"revision {missing} is missing (the next one stored is {rev.number})",
            )
        try:
            records = json.loads(rev.changes_json)
        except ValueError:
            return ChainCheck(
                False, checked, rev.number, f"revision {rev.number} has unreadable changes"
            )
        content = revision_content(rev.number, rev.created_at, rev.meta, records)
        if revision_hash(rev.prev_hash, content) != rev.hash:
            return ChainCheck(
                False, checked, rev.number,
                f"revision {rev.number} was changed after it was written: "
                "its content no longer matches its hash",
            )
        if rev.prev_hash != prev_hash:
            if rev.number == 1:
                return ChainCheck(
                    False, checked, 1, "revision 1 does not start this store's chain (lineage)"
                )
            return ChainCheck(
                False, checked - 1, prev_number,
                f"revision {prev_number} was rewritten: its hash no longer matches the "
                f"one revision {rev.number} recorded",
            )
        problem = _check_versions(rev, records)
        if problem:
            return ChainCheck(False, checked, rev.number, problem)
        checked += 1
        prev_number, prev_hash = rev.number, rev.hash

    if head != prev_number:
        if head > prev_number:
            return ChainCheck(
                False, checked, prev_number + 1,
                f"the store's head is revision {head} but the newest stored revision is "
                f"{prev_number}: revisions after {prev_number} were removed",
            )
        return ChainCheck(
            False, checked, head + 1,
            f"revisions after the store's head ({head}) were added outside reconcile",
        )
    if head and head_hash != prev_hash:
        return ChainCheck(
            False, checked - 1, head,
            f"revision {head} was rewritten: its hash no longer matches the head the "
            "store recorded",
        )
    return ChainCheck(True, checked)
