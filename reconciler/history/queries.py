"""Read helpers behind `reconcile history` (list / show / as-of / export).

They return plain data (YAML-ready documents, JSON-able dicts); rendering and
exit codes belong to the CLI. Field diffs are stored already redacted by the
plan and are passed through untouched (redacting twice would change an
encrypted reference's fingerprint); resource bodies are redacted here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import yaml

from reconciler.config.desired import CanonicalResource, ResourceKey
from reconciler.config.secrets import redact
from reconciler.state.base import ChainCheck, Change, HistoryFilter, Revision, Store


def as_of_documents(store: Store, revision: int | None = None) -> list[dict[str, Any]]:
    """The live config as it was right after ``revision`` (now if None), as
    documents ``reconcile validate`` accepts, ordered by kind/namespace/name."""
    return [res.to_document() for res in store.snapshot(revision)]


def yaml_stream(documents: Sequence[dict[str, Any]]) -> str:
    """Documents as one YAML stream, each after ``---`` (as-of, `live get`, the console)."""
    return "".join("---\n" + yaml.dump(doc, Dumper=_DUMPER, sort_keys=False, allow_unicode=True)
                   for doc in documents)


# libyaml's emitter when PyYAML was built with it (same output, several times faster)
_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def resource_history(store: Store, key: ResourceKey, limit: int | None = None) -> list[Revision]:
    """Revisions that touched one resource, newest first."""
    return store.revisions(HistoryFilter(resource=key, limit=limit))


def unrecorded_edits(store: Store) -> list[ResourceKey]:
    """Resources whose live row differs from what the history says the head wrote.

    Those were edited in the database directly, bypassing every revision;
    `reconcile drift` reports them and the next apply reverts them.
    """
    live = store.snapshot()
    recorded = store.snapshot(live.revision)
    keys = set(live.resources) | set(recorded.resources)
    return sorted(
        k for k in keys
        if (a := live.resources.get(k)) is None
        or (b := recorded.resources.get(k)) is None
        or a.digest != b.digest
    )


def _resource_dict(res: CanonicalResource | None) -> dict[str, Any] | None:
    if res is None:
        return None
    doc = res.to_document()
    doc["spec"] = redact(doc["spec"])
    return doc


def change_to_dict(change: Change, *, bodies: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {
        "action": change.action.value,
        "resource": str(change.key),
        **change.key._asdict(),
        "beforeDigest": change.before.digest if change.before else None,
        "afterDigest": change.after.digest if change.after else None,
        "fields": [f.to_json() for f in change.fields],
    }
    if bodies:
        out["before"] = _resource_dict(change.before)
        out["after"] = _resource_dict(change.after)
    return out


def revision_to_dict(rev: Revision, *, bodies: bool = False) -> dict[str, Any]:
    """One revision for auditors and `--output json`; secrets stay redacted."""
    return {
        "revision": rev.number,
        "createdAt": rev.created_at.isoformat(),
        **rev.meta.to_json(),
        "credentialMoves": [mv.to_json() for mv in rev.meta.credential_moves],
        "prevHash": rev.prev_hash,
        "hash": rev.hash,
        "changes": [change_to_dict(c, bodies=bodies) for c in rev.changes],
    }


def chain_to_dict(check: ChainCheck) -> dict[str, Any]:
    return {
        "ok": check.ok,
        "checked": check.checked,
        "firstBroken": check.first_broken,
        "reason": check.reason,
    }


def export(
    store: Store, flt: HistoryFilter | None = None, *, bodies: bool = False
) -> dict[str, Any]:
    """The history as one JSON-able document, oldest first, with the chain check.

    Hashes are included so an auditor can keep the head hash elsewhere (a
    ticket, a signed tag) and later show the store still ends in it.
    """
    revs = sorted(store.revisions(flt), key=lambda r: r.number)
    return {
        "lineage": store.lineage,
        "head": store.head(),
        "verification": chain_to_dict(store.verify()),
        "revisions": [revision_to_dict(r, bodies=bodies) for r in revs],
    }
