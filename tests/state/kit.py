"""Small builders for store tests: resources, changes and revision metadata."""

from __future__ import annotations

from typing import Any

from reconciler.config.desired import CanonicalResource, ResourceKey
from reconciler.state import Action, Change, FieldChange, RevisionKind, RevisionMeta

API = "reconciler.dev/v1"


def res(
    name: str,
    *,
    ns: str = "default",
    kind: str = "OutgoingServer",
    labels: dict[str, str] | None = None,
    **spec: Any,
) -> CanonicalResource:
    return CanonicalResource.build(ResourceKey(kind, ns, name), API, spec or {"host": name},
                                   labels)


def create(r: CanonicalResource) -> Change:
    return Change(Action.CREATE, r.key, None, r)


def update(before: CanonicalResource, after: CanonicalResource, *fields: FieldChange) -> Change:
    return Change(Action.UPDATE, after.key, before, after, fields)


def delete(r: CanonicalResource) -> Change:
    return Change(Action.DELETE, r.key, r, None)


def meta(actor: str = "alice", kind: RevisionKind = RevisionKind.APPLY, **kw: Any) -> RevisionMeta:
    return RevisionMeta(actor=actor, kind=kind, **kw)
