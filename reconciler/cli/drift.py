"""`reconcile drift [DIR]`: what changed in the live store outside git (SPEC P5).

Drift is the live spec against the last APPLY revision: everything written
since by `reconcile live set` or an admin API (out-of-band revisions), and
rows edited directly in the database, which no revision records. Status
(health, token expiry, counters) is kept apart from spec and never counts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from reconciler.cli.common import (
    UsageExitsOne,
    finish,
    format_option,
    opened_store,
    show_time,
    store_option,
)
from reconciler.cli.history import field_lines
from reconciler.config.desired import DesiredState
from reconciler.history import queries
from reconciler.plan.diff import diff
from reconciler.plan.render import SIGN
from reconciler.state import Change, HistoryFilter, Revision, RevisionKind, Store

EXIT_DRIFT = 2


@dataclass(frozen=True)
class Drifted:
    change: Change  # before = as of the last apply, after = live now
    revisions: tuple[Revision, ...] = ()  # out-of-band revisions since that touched it
    direct_edit: bool = False  # the live row differs from what any revision wrote


@dataclass(frozen=True)
class DriftReport:
    last_apply: int
    head: int
    items: tuple[Drifted, ...] = ()


def find_drift(store: Store) -> DriftReport:
    last_apply = store.last_revision(RevisionKind.APPLY)
    live = store.snapshot()
    applied = store.snapshot(last_apply)
    since = (store.revisions(HistoryFilter(limit=live.revision - last_apply))
             if live.revision > last_apply else [])
    direct = set(queries.unrecorded_edits(store))
    # "Desired" here is simply the live state: the diff then reads
    # last-apply value -> live value, field by field, already redacted.
    items = []
    for change in diff(DesiredState.of(live), applied, prune=True).changes:
        touched = tuple(r for r in reversed(since) if any(c.key == change.key for c in r.changes))
        items.append(Drifted(change, touched, change.key in direct))
    return DriftReport(last_apply, live.revision, tuple(items))


def _plan_hint(path: Path) -> str:
    return (f"`reconcile plan {path}` shows what applying git would revert; "
            "to keep a change, put it in git.")


@click.command("drift", cls=UsageExitsOne)
@click.argument("path", type=click.Path(path_type=Path, exists=True), default=Path("."),
                required=False)
@format_option()
@store_option
def command(path: Path, fmt: str, store_url: str | None) -> None:
    """Resources changed in the live store since the last apply (exit 2 if any).

    PATH is the config repo that `reconcile plan` would compare with. Exit 0:
    no drift, 2: drift, 1: error.
    """
    with opened_store(store_url) as store:
        report = find_drift(store)
    if fmt == "json":
        data = {"drift": bool(report.items), "lastApply": report.last_apply,
                "head": report.head, "resources": [_item_json(i) for i in report.items],
                "hint": _plan_hint(path)}
        click.echo(json.dumps(data, indent=2, ensure_ascii=False))
    else:
        click.echo("\n".join(_text(report, path)))
    finish(EXIT_DRIFT if report.items else 0)


def _baseline(report: DriftReport) -> str:
    if report.last_apply == 0:
        return "the empty store (nothing has been applied yet)"
    return f"revision {report.last_apply}, the last apply"


def _text(report: DriftReport, path: Path) -> list[str]:
    if not report.items:
        return [f"no drift: the live store matches {_baseline(report)} (head {report.head})"]
    n = len(report.items)
    lines = [f"drift: {n} resource{'s' * (n != 1)} changed outside git since "
             f"{_baseline(report)}", ""]
    for item in report.items:
        change = item.change
        lines.append(f"{SIGN[change.action]} {change.key}")
        for rev in item.revisions:
            why = f': "{rev.meta.message}"' if rev.meta.message else ""
            lines.append(f"    by revision {rev.number} ({rev.meta.kind.value}), "
                         f"{rev.meta.actor} at {show_time(rev.created_at)}{why}")
        if item.direct_edit:
            lines.append("    edited directly in the database: no revision records this "
                         "change (see `reconcile history verify`)")
        lines += field_lines(change.fields)
    lines += ["", _plan_hint(path)]
    return lines


def _item_json(item: Drifted) -> dict[str, Any]:
    change = queries.change_to_dict(item.change)
    return {
        **{k: change[k] for k in ("resource", "action", "kind", "namespace", "name", "fields")},
        "revisions": [
            {"revision": r.number, "kind": r.meta.kind.value, "actor": r.meta.actor,
             "createdAt": r.created_at.isoformat(), "message": r.meta.message}
            for r in item.revisions
        ],
        "directEdit": item.direct_edit,
    }
