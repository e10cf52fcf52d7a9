"""Apply a plan: lock, check it still fits the store, guard against mass changes,
commit as one revision (SPEC P2, P3).

Every check runs while the lock is held, so nothing can move the store
between "this plan is current" and the commit; the store's own base-revision
check inside the commit transaction is the last line of defence for writers
that do not take the lock.
"""

from __future__ import annotations

import getpass
import os
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import replace

from reconciler.credentials.moves import FLAG, approval_for, find_moves, grouped
from reconciler.plan.model import Plan
from reconciler.state.base import LockInfo, StaleRevision, Store, StoreError
from reconciler.state.revisions import Action, ApprovedMove, Revision, RevisionMeta

DEFAULT_MAX_CHANGE_RATIO = 0.30
DEFAULT_MIN_GUARDED = 10

# Who triggered the CI job, per CI system, in the order they are tried.
CI_ACTOR_VARIABLES = (
    "GITHUB_ACTOR",  # GitHub Actions
    "GITLAB_USER_LOGIN",  # GitLab CI
    "BUILD_REQUESTEDFOR",  # Azure Pipelines
    "BUILDKITE_BUILD_CREATOR",  # Buildkite
    "CIRCLE_USERNAME",  # CircleCI
    "BITBUCKET_STEP_TRIGGERER_UUID",  # Bitbucket Pipelines (no login name is exposed)
)


class ApplyRefused(StoreError):
    """The plan was not applied; the message says why and what to do."""


class LineageMismatch(ApplyRefused):
    pass


class ThresholdExceeded(ApplyRefused):
    pass


def resolve_actor(explicit: str | None = None, env: Mapping[str, str] | None = None) -> str:
    """``--actor``, else the CI user, else the OS user: the name the history records."""
    if explicit and explicit.strip():
        return explicit.strip()
    env = os.environ if env is None else env
    for name in CI_ACTOR_VARIABLES:
        if env.get(name, "").strip():
            return env[name].strip()
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no login name in a bare container
        return f"uid:{os.getuid()}" if hasattr(os, "getuid") else "unknown"


def check_lineage(store: Store, plan: Plan) -> None:
    if plan.lineage != store.lineage:
        raise LineageMismatch(
            f"this plan was made against another store (lineage {plan.lineage}), not this one "
            f"(lineage {store.lineage}). Nothing was applied. Make the plan against the store "
            "you apply to: `reconcile plan DIR --store URL --out FILE`."
        )


def check_current(store: Store, plan: Plan) -> None:
    head = store.head()
    if head == plan.base_revision:
        return
    by = ""
    try:
        rev = store.revision(head)
        by = f" (by {rev.meta.actor}, {rev.meta.kind.value}, {rev.created_at:%Y-%m-%d %H:%M %Z})"
    except StoreError:
        pass
    raise StaleRevision(
        f"the live store changed since this plan was made: the plan is based on revision "
        f"{plan.base_revision}, the store is now at revision {head}{by}. Nothing was "
        "applied. Re-run `reconcile plan` to see the changes against the current state, "
        "then apply the new plan."
    )


def check_threshold(plan: Plan) -> None:
    """Refuse a plan that updates or deletes too large a share of what is live.

    Small stores are not guarded: changing 2 of 3 resources is normal there,
    and the ratio would make every first real edit look like an accident.
    """
    if plan.live_count < DEFAULT_MIN_GUARDED:
        return
    updates, deletes = plan.count(Action.UPDATE), plan.count(Action.DELETE)
    touched = updates + deletes
    if touched / plan.live_count <= DEFAULT_MAX_CHANGE_RATIO:
        return
    raise ThresholdExceeded(
        f"this plan would change {touched} of the {plan.live_count} live resources "
        f"({updates} update{'s' * (updates != 1)}, {deletes} delete{'s' * (deletes != 1)}, "
        f"{touched / plan.live_count:.0%}), more than the safety threshold of "
        f"{DEFAULT_MAX_CHANGE_RATIO:.0%}. Nothing was applied. Check the plan (a wrong folder or "
        "namespace shows up like this); if the changes are intended, apply again with --force."
    )


class CredentialMoveRefused(ApplyRefused):
    pass


BOOTSTRAP = "bootstrap"


def check_credential_moves(
    store: Store, plan: Plan, approvals: Sequence[str], approver: str
) -> tuple[ApprovedMove, ...]:
    """The plan's credential moves, each with its approval; refuse any without one.

    The moves are found again here, under the lock, against the bindings as they are
    now: a saved plan's own list is for the reviewer, not something apply trusts.
    A store with no revision yet has nothing bound, so its first apply binds what it
    applies (recorded as ``bootstrap``) unless an approval was given for it.
    """
    moves = find_moves(plan.changes, store.credential_bindings())
    bootstrap = plan.base_revision == 0
    approved: list[ApprovedMove] = []
    missing = []
    for move in moves:
        given = approval_for(move, approvals) or (BOOTSTRAP if bootstrap else None)
        if given is None:
            missing.append(move)
            continue
        approved.append(ApprovedMove(str(move.resource), move.shown, move.endpoint,
                                     move.bound_to, given, approver))
    if missing:
        listed = "\n".join(f"  ! {line}" for line in grouped(missing))
        flags = " ".join(f"{FLAG} {a}" for a in dict.fromkeys(m.approval for m in missing))
        raise CredentialMoveRefused(
            f"this plan would present {len(missing)} credential"
            f"{'s' * (len(missing) != 1)} to endpoints no apply bound "
            f"{'them' if len(missing) != 1 else 'it'} to, and nothing approved that:\n"
            f"{listed}\nNothing was applied. If each endpoint is meant to receive the "
            f"credential, apply again with {flags} (an operator's decision: a pull request "
            "cannot give it)."
        )
    return tuple(approved)


def apply_plan(
    store: Store,
    plan: Plan,
    meta: RevisionMeta,
    *,
    lock_timeout: float,
    force: bool,
    approvals: Sequence[str] = (),
    lock_held: bool = False,
    on_wait: Callable[[LockInfo], None] | None = None,
) -> Revision:
    """Write ``plan`` as one revision; raise an :class:`StoreError` subclass when refused.

    ``approvals``: values of --approve-credential-move; the moves they allow are
    recorded in the revision with ``meta.actor`` as the approver.
    ``lock_held``: the caller already holds the apply lock (it planned under
    it, see :func:`planning_lock`), so it is not taken a second time.
    """
    if not plan.has_changes:
        raise ApplyRefused("the plan has no changes; there is nothing to apply")
    # The history says a revision was a partial apply, and of what.
    scoped = f"{meta.message} [scope: {plan.scope.describe()}]".lstrip() if plan.scope else ""
    meta = replace(
        meta,
        message=scoped or meta.message,
        plan_digest=plan.digest,
        desired_digest=plan.desired_digest,
        git_commit=meta.git_commit or plan.git.commit,
        git_branch=meta.git_branch or plan.git.branch,
        pull_request=meta.pull_request or plan.git.pull_request,
    )
    with nullcontext() if lock_held else store.lock(
            meta.actor, "apply", timeout=lock_timeout, plan_digest=plan.digest, on_wait=on_wait):
        check_lineage(store, plan)
        check_current(store, plan)
        if not force:
            check_threshold(plan)
        moves = check_credential_moves(store, plan, approvals, meta.actor)
        meta = replace(meta, credential_moves=moves)
        return store.commit(plan.changes, meta, base_revision=plan.base_revision)


def planning_lock(store: Store, actor: str, *, timeout: float,
                  on_wait: Callable[[LockInfo], None] | None = None,
                  ) -> AbstractContextManager[LockInfo]:
    """The apply lock for planning and applying a directory in one go.

    Planned under the lock, against the head at that moment, an apply can
    never be stale: concurrent applies queue for the lock and each plans
    against what the one before it wrote, instead of all but the first
    failing. A saved plan is different: it was reviewed against its base
    revision, so it still refuses when the store has moved.
    """
    return store.lock(actor, "apply", timeout=timeout, on_wait=on_wait)
