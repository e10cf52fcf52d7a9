"""The Plan: what apply will write, against which live revision, and from which commit.

A plan is self-contained: it carries the full desired version of every
resource it creates or updates, so ``apply PLANFILE`` writes exactly what
was reviewed, whatever the config folder says by then (SPEC P2). Its digest
covers all of that; a saved plan whose content no longer matches its digest
is refused on load.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from reconciler.config.desired import DesiredState, ResourceKey, digest_of
from reconciler.credentials.moves import CredentialMove, find_moves
from reconciler.plan.diff import DiffResult, diff
from reconciler.plan.scope import Scope, check_known, scoped_keys
from reconciler.state.codec import resource_of
from reconciler.state.revisions import Action, Change, FieldChange, LiveState

FORMAT = "reconcile-plan"
VERSION = 1


class PlanFileError(Exception):
    """A saved plan that cannot be used: unreadable, not a plan, or modified."""


@dataclass(frozen=True, slots=True)
class GitInfo:
    commit: str | None = None
    branch: str | None = None
    pull_request: str | None = None

    def describe(self) -> str:
        parts = []
        if self.commit:
            parts.append(f"commit {self.commit[:12]}")
        if self.branch:
            parts.append(f"branch {self.branch}")
        if self.pull_request:
            parts.append(f"PR #{self.pull_request}")
        return ", ".join(parts)

    def to_json(self) -> dict[str, str | None]:
        return {"commit": self.commit, "branch": self.branch, "pullRequest": self.pull_request}


@dataclass(frozen=True)
class Plan:
    changes: tuple[Change, ...]
    unmanaged: tuple[ResourceKey, ...]
    base_revision: int
    lineage: str
    live_count: int  # resources live at base_revision: the safety threshold's denominator
    desired_digest: str
    prune: bool
    git: GitInfo
    created_at: datetime
    source: str = ""
    # Credentials the changes would present where no apply bound them (SPEC S2).
    credential_moves: tuple[CredentialMove, ...] = ()
    # None: the whole configuration was planned (see plan.scope).
    scope: Scope | None = None
    digest: str = field(default="", compare=False)

    @classmethod
    def build(
        cls,
        result: DiffResult,
        desired: DesiredState,
        live: LiveState,
        *,
        prune: bool,
        git: GitInfo | None = None,
        source: str = "",
        created_at: datetime | None = None,
        bound: frozenset[tuple[str, str]] = frozenset(),
        scope: Scope | None = None,
    ) -> Plan:
        plan = cls(
            changes=result.changes,
            unmanaged=result.unmanaged,
            base_revision=live.revision,
            lineage=live.lineage,
            # Scoped, the threshold is a share of the live resources in the scope.
            live_count=len(live) if scope is None else len(scoped_keys(live.resources, scope)),
            desired_digest=desired.digest,
            prune=prune,
            git=git or GitInfo(),
            created_at=(created_at or datetime.now(UTC)).replace(microsecond=0),
            source=source,
            credential_moves=find_moves(result.changes, bound),
            scope=scope,
        )
        return plan.sealed()

    def sealed(self) -> Plan:
        """This plan with its digest computed from its content."""
        return replace(self, digest=digest_of(_content(self)))

    @property
    def has_changes(self) -> bool:
        return bool(self.changes)

    def count(self, action: Action) -> int:
        return sum(1 for c in self.changes if c.action is action)


def make_plan(
    root: Path,
    desired: DesiredState,
    live: LiveState,
    *,
    derived: Mapping[ResourceKey, set[str]] | None = None,
    prune: bool = False,
    env: Mapping[str, str] | None = None,
    bound: frozenset[tuple[str, str]] = frozenset(),
    scope: Scope | None = None,
) -> Plan:
    """Validated config + live state -> Plan: the one path `plan` and `apply DIR` share.

    ``bound``: the store's credential bindings, to find the plan's credential moves.
    ``scope``: plan only these resources; raises UnknownTarget if it names nothing.
    """
    if scope is not None:
        check_known(scope, desired.resources.keys() | live.resources.keys())
    result = diff(desired, live, derived=derived, prune=prune, scope=scope)
    return Plan.build(result, desired, live, prune=prune, git=git_info(root, env),
                      source=str(root), bound=bound, scope=scope)


# -- git information ------------------------------------------------------------


def git_info(path: Path, env: Mapping[str, str] | None = None) -> GitInfo:
    """Commit, branch and pull request of the config, from CI variables or the checkout.

    CI variables win: on a pull request GitHub checks out a detached merge
    commit, so only the environment knows the branch and the PR number.
    """
    env = os.environ if env is None else env
    commit = env.get("GITHUB_SHA") or None
    branch = env.get("GITHUB_HEAD_REF") or None
    pull_request = None
    ref = env.get("GITHUB_REF", "")
    if ref.startswith("refs/pull/"):
        pull_request = ref.split("/")[2] or None
    elif ref.startswith("refs/heads/") and not branch:
        branch = env.get("GITHUB_REF_NAME") or ref.removeprefix("refs/heads/")
    if commit is None:
        commit = _git(path, "rev-parse", "HEAD")
    if branch is None and pull_request is None:
        branch = _git(path, "symbolic-ref", "--short", "-q", "HEAD")
    return GitInfo(commit, branch, pull_request)


def _git(path: Path, *args: str) -> str | None:
    folder = path if path.is_dir() else path.parent
    try:
        out = subprocess.run(
            ["git", "-C", str(folder), *args], capture_output=True, text=True, timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None  # no git installed, or not a checkout: the plan simply has no git info
    return (out.stdout.strip() or None) if out.returncode == 0 else None


# -- JSON form ------------------------------------------------------------------


def change_json(change: Change, *, bodies: bool) -> dict[str, Any]:
    """One change as a saved plan holds it (``bodies``) and as `plan --format json` shows it."""
    out: dict[str, Any] = {"action": change.action.value, **change.key._asdict()}
    if bodies:
        out["before"] = change.before.body() if change.before is not None else None
        out["after"] = change.after.body() if change.after is not None else None
    out["fields"] = [f.to_json() for f in change.fields]
    return out


def _content(plan: Plan) -> dict[str, Any]:
    """Everything the digest covers (the saved file minus the digest itself)."""
    return {
        "format": FORMAT,
        "version": VERSION,
        "createdAt": plan.created_at.isoformat(),
        "source": plan.source,
        "lineage": plan.lineage,
        "baseRevision": plan.base_revision,
        "liveCount": plan.live_count,
        "desiredDigest": plan.desired_digest,
        "prune": plan.prune,
        "git": plan.git.to_json(),
        "changes": [change_json(c, bodies=True) for c in plan.changes],
        "unmanaged": [k._asdict() for k in plan.unmanaged],
        "credentialMoves": [m.to_json() for m in plan.credential_moves],
        # Only when scoped, so the digests of unscoped plans saved before scopes still match.
        **({"scope": plan.scope.to_json()} if plan.scope is not None else {}),
    }


def to_data(plan: Plan) -> dict[str, Any]:
    return {**_content(plan), "digest": plan.digest}


def save(plan: Plan, path: Path) -> None:
    if not plan.digest:
        plan = plan.sealed()
    # Compact: json only uses its C encoder without indent, 10x faster on big plans.
    text = json.dumps(to_data(plan), ensure_ascii=False) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)  # a half-written plan must never be mistaken for a plan


def load(path: Path) -> Plan:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PlanFileError(f"cannot read the plan {path}: {exc.strerror}") from None
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise PlanFileError(
            f"{path} is not a saved plan; create one with `reconcile plan DIR --out {path}`"
        )
    if data.get("version") != VERSION:
        raise PlanFileError(
            f"{path} is a plan in format version {data.get('version')!r}, this reconcile reads "
            f"version {VERSION}; re-create it with `reconcile plan DIR --out {path}`"
        )
    stored = data.pop("digest", None)
    if stored != digest_of(data):
        raise PlanFileError(
            f"{path} was modified after it was saved (its content no longer matches its "
            "digest), so it is not the plan that was reviewed. Nothing was applied; "
            f"re-create it with `reconcile plan DIR --out {path}` and review it again."
        )
    try:
        plan = _from_content(data)
    except (KeyError, TypeError, ValueError) as exc:
        raise PlanFileError(f"{path} is not a valid plan ({exc.__class__.__name__}: {exc}); "
                            "re-create it with `reconcile plan`") from None
    return replace(plan, digest=stored)


def _from_content(data: Mapping[str, Any]) -> Plan:
    changes = []
    for item in data["changes"]:
        key = ResourceKey(item["kind"], item["namespace"], item["name"])
        action = Action(item["action"])
        before, after = resource_of(key, item["before"]), resource_of(key, item["after"])
        if (after is None) != (action is Action.DELETE):
            raise ValueError(f"{action.value} of {key} has the wrong resource versions")
        fields = tuple(FieldChange(f["path"], f["before"], f["after"], bool(f["derived"]))
                       for f in item["fields"])
        changes.append(Change(action, key, before, after, fields))
    git = data["git"]
    return Plan(
        changes=tuple(changes),
        unmanaged=tuple(ResourceKey(u["kind"], u["namespace"], u["name"])
                        for u in data["unmanaged"]),
        base_revision=int(data["baseRevision"]),
        lineage=str(data["lineage"]),
        live_count=int(data["liveCount"]),
        desired_digest=str(data["desiredDigest"]),
        prune=bool(data["prune"]),
        git=GitInfo(git.get("commit"), git.get("branch"), git.get("pullRequest")),
        created_at=datetime.fromisoformat(data["createdAt"]),
        source=str(data.get("source", "")),
        credential_moves=tuple(CredentialMove.from_json(m)
                               for m in data.get("credentialMoves", ())),
        scope=Scope.from_json(data["scope"]) if "scope" in data else None,
    )
