"""`reconcile drift [DIR]`: what changed in the live store outside git (SPEC P5).

Drift is the live spec against the last revision git wrote (apply, or a sync
rollback): everything written since by `reconcile live set` or an admin API
(out-of-band revisions), and rows edited directly in the database, which no
revision records. Status (health, token expiry, counters) is kept apart from
spec and never counts. The report is ``sync.drift``'s, the one self-heal uses.
"""

from __future__ import annotations

import json
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
from reconciler.history import queries
from reconciler.plan.render import SIGN
from reconciler.sync.drift import Drifted, DriftReport, find_drift

EXIT_DRIFT = 2


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
        data = {"drift": bool(report.items), "lastApply": report.baseline,
                "head": report.head, "resources": [_item_json(i) for i in report.items],
                "hint": _plan_hint(path)}
        click.echo(json.dumps(data, indent=2, ensure_ascii=False))
    else:
        click.echo("\n".join(_text(report, path)))
    finish(EXIT_DRIFT if report.items else 0)


def _baseline(report: DriftReport) -> str:
    if report.baseline == 0:
        return "the empty store (nothing has been applied yet)"
    return f"revision {report.baseline}, the last {report.baseline_kind.value}"


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
