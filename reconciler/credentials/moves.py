"""Credential moves: a change that would present a credential somewhere it is not
bound (SPEC S2), and the approvals that let apply make them anyway.

A move is one (credential, endpoint) pair that a created or updated resource
presents and that no resource in the store is bound to: an existing credential
sent to a new endpoint, or a new credential sent anywhere. An approval names the
resource (``KIND/NAME`` in the default namespace, or ``KIND/NAMESPACE/NAME``) or
is ``all``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from reconciler.config.desired import ResourceKey
from reconciler.config.endpoints import KINDS, Pair, display, pairs_of
from reconciler.state.base import Change

APPROVE_ALL = "all"
FLAG = "--approve-credential-move"


@dataclass(frozen=True, slots=True)
class CredentialMove:
    resource: ResourceKey
    credential: str  # endpoints id: a reference or OAuth client, never a value
    endpoint: str
    bound_to: tuple[str, ...] = ()  # every endpoint the credential is bound to now

    @property
    def shown(self) -> str:
        return display(self.credential)

    @property
    def approval(self) -> str:
        """The value of --approve-credential-move that allows this move."""
        key = self.resource
        return f"{key.kind}/{key.name}" if key.namespace == "default" else str(key)

    @property
    def source(self) -> str:
        return ", ".join(self.bound_to) if self.bound_to else "nowhere yet"

    def to_json(self) -> dict[str, Any]:
        return {**self.resource._asdict(), "credential": self.credential,
                "endpoint": self.endpoint,
                "boundTo": list(self.bound_to)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CredentialMove:
        key = ResourceKey(str(data["kind"]), str(data["namespace"]), str(data["name"]))
        return cls(key, str(data["credential"]), str(data["endpoint"]),
                   tuple(map(str, data.get("boundTo") or ())))


def grouped(moves: Iterable[CredentialMove]) -> list[str]:
    """One line per resource and credential: ``Kind ns/name: cred -> a, b (bound to ...)``."""
    groups: dict[tuple[ResourceKey, str], list[CredentialMove]] = {}
    for m in moves:
        groups.setdefault((m.resource, m.credential), []).append(m)
    lines = []
    for (key, _), ms in groups.items():
        to = ", ".join(m.endpoint for m in ms)
        lines.append(f"{key.kind} {key.namespace}/{key.name}: {ms[0].shown} -> {to} "
                     f"(bound to {ms[0].source})")
    return lines


def find_moves(changes: Iterable[Change], bound: frozenset[Pair]) -> tuple[CredentialMove, ...]:
    """Every pair the changes' new versions present that ``bound`` does not hold."""
    where: dict[str, list[str]] = {}
    for credential, endpoint in sorted(bound):
        where.setdefault(credential, []).append(endpoint)
    moves: list[CredentialMove] = []
    for change in changes:
        if change.after is None or change.key.kind not in KINDS:
            continue
        for credential, endpoint in sorted(pairs_of(change.key.kind, change.after.spec)):
            if (credential, endpoint) not in bound:
                moves.append(CredentialMove(change.key, credential, endpoint,
                                            tuple(where.get(credential, ()))))
    return tuple(moves)


def parse_approval(text: str) -> ResourceKey | None:
    """``None`` for ``all``; raises ValueError for anything that names no resource."""
    text = text.strip()
    if text.lower() == APPROVE_ALL:
        return None
    parts = text.split("/")
    if len(parts) == 2 and all(parts):
        return ResourceKey(parts[0], "default", parts[1])
    if len(parts) == 3 and all(parts):
        return ResourceKey(parts[0], parts[1], parts[2])
    raise ValueError(
        f"{FLAG} {text!r} names no resource: write KIND/NAME, KIND/NAMESPACE/NAME "
        f"(as the plan lists it, e.g. OutgoingServer/acme/smtp) or {APPROVE_ALL}"
    )


def approval_for(move: CredentialMove, approvals: Sequence[str]) -> str | None:
    """The approval (as given) that covers ``move``, or None."""
    for given in approvals:
        key = parse_approval(given)
        if key is None or key == move.resource:
            return given.strip()
    return None
