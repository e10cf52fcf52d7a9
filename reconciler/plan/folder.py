"""Plan a validated config folder against the store and apply it in one go, under the
apply lock: what `reconcile apply DIR --yes` does and what the syncer does (SPEC P2, X5).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from reconciler.plan.apply import apply_plan, planning_lock
from reconciler.plan.model import Plan, make_plan
from reconciler.plan.scope import Scope
from reconciler.policy.validate import ValidationResult
from reconciler.state.base import LockInfo, Store
from reconciler.state.revisions import LiveState, Revision, RevisionMeta


def plan_against(path: Path, result: ValidationResult, store: Store, *, prune: bool,
                 scope: Scope | None = None,
                 live: Callable[[Store], LiveState] | None = None) -> Plan:
    """``live``: where the live state at the head comes from (the syncer keeps one between
    syncs); by default the store's own snapshot."""
    assert result.desired is not None, "plan only a config that validated"
    current = live(store) if live is not None else store.snapshot()
    return make_plan(path, result.desired, current, derived=result.derivations(),
                     prune=prune, bound=store.credential_bindings(), scope=scope)


def apply_folder(
    store: Store,
    path: Path,
    result: ValidationResult,
    meta: RevisionMeta,
    *,
    prune: bool,
    lock_timeout: float,
    force: bool = False,
    approvals: Sequence[str] = (),
    on_wait: Callable[[LockInfo], None] | None = None,
    show: Callable[[Plan], None] | None = None,
    scope: Scope | None = None,
    live: Callable[[Store], LiveState] | None = None,
) -> tuple[Plan, Revision | None]:
    """Plan ``path`` against the head of the moment the lock is held and apply it with
    every check of :func:`apply_plan`; the revision is None when nothing changed.

    Planned under the lock, applies queue and each one sees what the previous one
    wrote. ``show`` sees the plan before it is applied (the CLI prints it).
    """
    with planning_lock(store, meta.actor, timeout=lock_timeout, on_wait=on_wait):
        plan = plan_against(path, result, store, prune=prune, scope=scope, live=live)
        if show is not None:
            show(plan)
        if not plan.has_changes:
            return plan, None
        return plan, apply_plan(store, plan, meta, lock_timeout=lock_timeout, force=force,
                                lock_held=True, approvals=approvals)
