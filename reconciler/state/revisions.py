"""What a revision is: the changes it made, who made them and why, and the live
state it leaves; the store's history is a hash chain of these (SPEC P3, P4)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from reconciler.config.desired import CanonicalResource, ResourceKey


class Action(StrEnum):
    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"


class RevisionKind(StrEnum):
    APPLY = "apply"  # written by `reconcile apply`
    OUT_OF_BAND = "out-of-band"  # `reconcile live set`, an admin API, a direct edit
    AUTH = "auth"  # `reconcile auth login` (no spec change; never carries a token)
    HEAL = "heal"  # the sync loop put git's version back over out-of-band changes
    ROLLBACK = "rollback"  # the sync loop restored the config before a failed apply
    SYNC = "sync"  # `reconcile sync suspend|resume` (no spec change; names the actor)


@dataclass(frozen=True, slots=True)
class FieldChange:
    """One field-level difference, already redacted. ``path`` is dotted camelCase."""

    path: str
    before: Any = None
    after: Any = None
    derived: bool = False  # the value was filled in by config.derive, not written in git

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "before": self.before, "after": self.after,
                "derived": self.derived}


@dataclass(frozen=True, slots=True)
class Change:
    action: Action
    key: ResourceKey
    before: CanonicalResource | None
    after: CanonicalResource | None
    fields: tuple[FieldChange, ...] = ()


@dataclass(frozen=True, slots=True)
class ApprovedMove:
    """A credential move an apply was allowed to make (SPEC S2), as history keeps it.

    ``credential`` is the printable id (``credentials.endpoints.display``): never a
    value, never ciphertext.
    """

    resource: str  # Kind/namespace/name of the resource that presents it
    credential: str
    endpoint: str
    bound_to: tuple[str, ...]  # where the credential was bound before; () if nowhere
    approval: str  # the --approve-credential-move value given, or "bootstrap"
    approved_by: str

    def to_json(self) -> dict[str, Any]:
        return {"resource": self.resource, "credential": self.credential,
                "endpoint": self.endpoint, "boundTo": list(self.bound_to),
                "approval": self.approval, "approvedBy": self.approved_by}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ApprovedMove:
        return cls(str(data["resource"]), str(data["credential"]), str(data["endpoint"]),
                   tuple(map(str, data.get("boundTo") or ())), str(data["approval"]),
                   str(data["approvedBy"]))


@dataclass(frozen=True, slots=True)
class RevisionMeta:
    """Who/what/why of a revision, recorded in the history as given."""

    actor: str
    message: str = ""
    git_commit: str | None = None
    git_branch: str | None = None
    pull_request: str | None = None
    desired_digest: str | None = None
    plan_digest: str | None = None
    kind: RevisionKind = RevisionKind.APPLY
    credential_moves: tuple[ApprovedMove, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """The recorded fields but the credential moves (hashed only when present)."""
        return {"kind": self.kind.value, "actor": self.actor, "message": self.message,
                "gitCommit": self.git_commit, "gitBranch": self.git_branch,
                "pullRequest": self.pull_request, "desiredDigest": self.desired_digest,
                "planDigest": self.plan_digest}


@dataclass(frozen=True, slots=True)
class Revision:
    number: int
    created_at: datetime
    meta: RevisionMeta
    changes: tuple[Change, ...]
    prev_hash: str
    hash: str


@dataclass(frozen=True, slots=True)
class RevisionSummary:
    """A revision as a list shows it: who, when, why, and what it touched."""

    number: int
    created_at: datetime
    meta: RevisionMeta
    resources: tuple[ResourceKey, ...]  # only the visible ones for a scoped reader


@dataclass(frozen=True)
class LiveState:
    """The live resources at one revision (the head when read with no revision)."""

    lineage: str
    revision: int
    resources: Mapping[ResourceKey, CanonicalResource]

    def __iter__(self) -> Iterator[CanonicalResource]:
        return iter(self.resources.values())

    def __len__(self) -> int:
        return len(self.resources)


@dataclass(frozen=True, slots=True)
class ChainCheck:
    ok: bool
    checked: int
    first_broken: int | None = None
    reason: str = ""


@dataclass(frozen=True, slots=True)
class HistoryFilter:
    resource: ResourceKey | None = None
    namespace: str | None = None
    actor: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    kinds: Sequence[RevisionKind] = field(default_factory=tuple)
    limit: int | None = None  # newest N matching revisions; None = all
