"""Drift (SPEC P5) and the sync loop's self-heal (SPEC X5, issue 13 item 4).

Drift is the live spec against what git last wrote: the newest ``apply`` or
``rollback`` revision (a rollback restores an approved config, so it is git's
word too, and healing must not undo it). Everything since, written by
`reconcile live set` or an admin API (out-of-band revisions), or rows edited
directly in the database, is drift. Status (health, token expiry, counters) is
kept apart from spec and never counts. `reconcile drift` shows the same report.

Functions:

- ``find_drift(store) -> DriftReport(baseline, head, items)``: each
  :class:`Drifted` has the change baseline -> live, the out-of-band revisions
  that touched the resource, and whether a direct edit did. ``selfHeal: warn``
  reports this (``report.summary()`` for status and notifications).
- ``heal(store, actor, *, git_commit=None, lock_timeout=30.0) -> HealResult``:
  ``selfHeal: heal``; puts the baseline version of every drifted resource
  back as one revision of kind ``heal`` whose message names the out-of-band
  revisions (and direct edits) it reverted. ``lock_timeout=None`` when the
  caller already holds the store lock. ``HealResult.revision`` is None when
  there was nothing to heal.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

from reconciler.config.desired import DesiredState
from reconciler.history import queries
from reconciler.plan.diff import diff
from reconciler.state import (
    Change,
    HistoryFilter,
    LiveState,
    Revision,
    RevisionKind,
    RevisionMeta,
    Store,
)

# The revisions that write git's config: drift is measured from the newest of them.
GIT_WRITTEN = (RevisionKind.APPLY, RevisionKind.ROLLBACK)


@dataclass(frozen=True)
class Drifted:
    change: Change  # before = as git last wrote it, after = live now
    revisions: tuple[Revision, ...] = ()  # out-of-band revisions since that touched it
    direct_edit: bool = False  # the live row differs from what any revision wrote


@dataclass(frozen=True)
class DriftReport:
    baseline: int  # the revision git last wrote (0: nothing applied yet)
    head: int
    items: tuple[Drifted, ...] = ()
    baseline_kind: RevisionKind = RevisionKind.APPLY

    @property
    def reverted(self) -> tuple[int, ...]:
        """The out-of-band revision numbers behind the drift, oldest first."""
        return tuple(sorted({r.number for i in self.items for r in i.revisions}))

    def summary(self) -> str:
        if not self.items:
            return f"no drift since revision {self.baseline}"
        names = ", ".join(str(i.change.key) for i in self.items)
        causes = [f"revision {n}" for n in self.reverted]
        causes += ["a direct database edit"] * any(i.direct_edit for i in self.items)
        return (f"{len(self.items)} resource(s) changed outside git since revision "
                f"{self.baseline}: {names} (by {', '.join(causes) or 'unknown'})")


@dataclass(frozen=True)
class HealResult:
    report: DriftReport  # what was drifted before the heal
    revision: Revision | None  # the heal revision; None when nothing drifted


def find_drift(store: Store) -> DriftReport:
    marks = {kind: store.last_revision(kind) for kind in GIT_WRITTEN}
    kind = max(marks, key=marks.__getitem__)
    baseline = marks[kind]
    live = store.snapshot()
    written = store.snapshot(baseline)
    since = (store.revisions(HistoryFilter(limit=live.revision - baseline))
             if live.revision > baseline else [])
    since = [r for r in since if r.meta.kind is not RevisionKind.HEAL]  # a cure, not a cause
    direct = set(queries.unrecorded_edits(store))
    # "Desired" here is simply the live state: the diff then reads
    # baseline value -> live value, field by field, already redacted.
    items = []
    for change in diff(DesiredState.of(live), written, prune=True).changes:
        touched = tuple(r for r in reversed(since) if any(c.key == change.key for c in r.changes))
        items.append(Drifted(change, touched, change.key in direct))
    return DriftReport(baseline, live.revision, tuple(items), kind)


def heal(store: Store, actor: str, *, git_commit: str | None = None,
         lock_timeout: float | None = 30.0) -> HealResult:
    """Write git's version of every drifted resource back, as one ``heal`` revision."""
    held: Any = (store.lock(actor, "sync heal", timeout=lock_timeout)
                 if lock_timeout is not None else nullcontext())
    with held:
        report = find_drift(store)
        if not report.items:
            return HealResult(report, None)
        live = store.snapshot()
        keys = {i.change.key for i in report.items}
        wanted = [i.change.before for i in report.items if i.change.before is not None]
        current = LiveState(live.lineage, live.revision,
                            {k: r for k, r in live.resources.items() if k in keys})
        changes = diff(DesiredState.of(wanted), current, prune=True).changes
        meta = RevisionMeta(actor=actor, message=_heal_message(report), git_commit=git_commit,
                            kind=RevisionKind.HEAL)
        return HealResult(report, store.commit(changes, meta, base_revision=live.revision))


def _heal_message(report: DriftReport) -> str:
    parts = []
    if report.reverted:
        numbers = ", ".join(map(str, report.reverted))
        parts.append(f"out-of-band revision{'s' * (len(report.reverted) > 1)} {numbers}")
    edited = [str(i.change.key) for i in report.items if i.direct_edit]
    if edited:
        parts.append(f"direct database edits of {', '.join(edited)}")
    return (f"self-heal: reverted {' and '.join(parts) or 'drift'} to git's version "
            f"(revision {report.baseline})")
