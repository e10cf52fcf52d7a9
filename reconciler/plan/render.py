"""A plan for people (text), pull requests (Markdown) and machines (JSON).

Every value shown comes from ``FieldChange``, which the diff already
redacted; the full resource bodies a plan carries are never rendered.
"""

from __future__ import annotations

import html
import json
import re
from collections import Counter
from typing import Any

import click

from reconciler.credentials.moves import FLAG, CredentialMove, grouped
from reconciler.plan.model import Plan, change_json
from reconciler.state.revisions import Action, Change, FieldChange

FORMATS = ("text", "markdown", "json")
MARKER = "<!-- reconcile-plan -->"
# GitHub rejects comments above 65,536 characters; keep room for the summary.
MARKDOWN_BUDGET = 60_000

SIGN = {Action.CREATE: "+", Action.UPDATE: "~", Action.DELETE: "-"}
COLOUR = {Action.CREATE: "green", Action.UPDATE: "yellow", Action.DELETE: "red"}
UNSET = "(unset)"


def summary(plan: Plan) -> str:
    if not plan.has_changes:
        return (f"No changes. The live store (revision {plan.base_revision}) matches the "
                "configuration.")
    moves = len(plan.credential_moves)
    # A first apply binds without approval (see plan.apply): nothing to approve then.
    need = (f"; {moves} credential move{'s' * (moves != 1)} to approve"
            if moves and plan.base_revision else "")
    return (f"Plan: {plan.count(Action.CREATE)} to create, {plan.count(Action.UPDATE)} to "
            f"update, {plan.count(Action.DELETE)} to delete{need} (base revision "
            f"{plan.base_revision}).")


MOVES_TITLE = f"Credential moves (apply refuses them unless approved with {FLAG}):"
BOOTSTRAP_TITLE = ("Credential moves (the first apply into a new store binds them without "
                   f"approval; later ones need {FLAG}):")


def _approvals(moves: tuple[CredentialMove, ...]) -> str:
    return " ".join(f"{FLAG} {a}" for a in dict.fromkeys(m.approval for m in moves))


def moves_text(moves: tuple[CredentialMove, ...], *, bootstrap: bool = False) -> list[str]:
    if not moves:
        return []
    lines = [BOOTSTRAP_TITLE if bootstrap else MOVES_TITLE]
    lines.extend(f"    ! {line}" for line in grouped(moves))
    lines.append(f"    approve with: {_approvals(moves)}")
    return lines


def unmanaged_note(plan: Plan) -> str:
    n = len(plan.unmanaged)
    return (f"{n} live resource{'s' * (n != 1)} not in the configuration "
            f"{'are' if n != 1 else 'is'} kept; plan with --prune to delete "
            f"{'them' if n != 1 else 'it'}.")


def value(v: Any) -> str:
    """One value as written in YAML-ish flow style: strings quoted, references inline."""
    if v is None:
        return UNSET
    if isinstance(v, dict) and set(v) == {"secretRef"}:
        return f"{{secretRef: {v['secretRef']}}}"
    return json.dumps(v, ensure_ascii=False)


def title(change: Change) -> str:
    key = change.key
    return f"{change.action.value} {key.kind} {key.namespace}/{key.name}"


# -- text -----------------------------------------------------------------------


def _field_text(change: Change, f: FieldChange) -> str:
    if change.action is Action.CREATE:
        shown = value(f.after)
    elif change.action is Action.DELETE:
        shown = value(f.before)
    else:
        shown = f"{value(f.before)} → {value(f.after)}"
    return f"{f.path}: {shown}"


def shown_fields(change: Change, show_derived: bool) -> tuple[FieldChange, ...]:
    """A new resource's values the YAML did not write (defaults, derived) are noise next
    to what the author wrote: they are shown when they change, or with --show-derived."""
    if show_derived or change.action is not Action.CREATE:
        return change.fields
    return tuple(f for f in change.fields if not f.derived)


def hidden_note(plan: Plan, show_derived: bool) -> str:
    hidden = sum(len(c.fields) - len(shown_fields(c, show_derived)) for c in plan.changes)
    if not hidden:
        return ""
    return (f"({hidden} default or derived value{'s' * (hidden != 1)} of new resources not "
            "shown; --show-derived lists them)")


def text(plan: Plan, *, colour: bool = False, show_derived: bool = False) -> str:
    def style(s: str, **kw: Any) -> str:
        return click.style(s, **kw) if colour else s

    changes: list[str] = []
    for change in plan.changes:
        fg = COLOUR[change.action]
        changes.append(style(f"{SIGN[change.action]} {title(change)}", fg=fg, bold=True))
        for f in shown_fields(change, show_derived):
            line = "    " + _field_text(change, f)
            if f.derived:
                line += style(" (derived)", dim=True)
            changes.append(line)
    if note := hidden_note(plan, show_derived):
        changes.append(style(note, dim=True))
    moves = moves_text(plan.credential_moves, bootstrap=plan.base_revision == 0)
    unmanaged = [f"    {k.kind} {k.namespace}/{k.name}" for k in plan.unmanaged]
    if unmanaged:
        unmanaged = ["Not in the configuration (kept, not deleted):", *unmanaged,
                     unmanaged_note(plan)]
    sections = [changes, [style(line, fg="magenta") for line in moves], unmanaged,
                [style(summary(plan), bold=True)]]
    return "\n\n".join("\n".join(lines) for lines in sections if lines)


# -- markdown -------------------------------------------------------------------


def _fence(body: str) -> str:
    longest = max((len(m) for m in re.findall(r"`+", body)), default=0)
    return "`" * max(3, longest + 1)


def _field_markdown(f: FieldChange) -> list[str]:
    note = "  # derived" if f.derived else ""
    out = []
    if f.before is not None:
        out.append(f"- {f.path}: {value(f.before)}")
    if f.after is not None:
        out.append(f"+ {f.path}: {value(f.after)}{note}")
    return out


def _details(change: Change, show_derived: bool) -> str:
    key = change.key
    fields = shown_fields(change, show_derived)
    body = "\n".join(line for f in fields for line in _field_markdown(f))
    fence = _fence(body)
    n = len(fields)
    head = (f"<details><summary><code>{SIGN[change.action]} {html.escape(key.kind)} "
            f"{html.escape(key.namespace)}/{html.escape(key.name)}</code> "
            f"({change.action.value}, {n} field{'s' * (n != 1)})</summary>")
    return f"{head}\n\n{fence}diff\n{body}\n{fence}\n\n</details>\n"


def _cell(s: str) -> str:
    return s.replace("|", "\\|")


def markdown(plan: Plan, show_derived: bool = False) -> str:
    parts = [MARKER, "### reconcile plan", "", f"**{summary(plan)}**", ""]
    if plan.scope:
        parts += [f"> [!WARNING]\n> {html.escape(plan.scope.warning(), quote=False)}.", ""]
    if plan.has_changes:
        counts = Counter((c.key.kind, c.action) for c in plan.changes)
        kinds = sorted({kind for kind, _ in counts})
        parts += ["| Kind | Create | Update | Delete |", "|---|---:|---:|---:|"]
        for kind in kinds:
            row = [str(counts[(kind, a)] or "") for a in Action]
            parts.append(f"| {_cell(kind)} | {' | '.join(row)} |")
        parts.append("")
        used = sum(len(p) + 1 for p in parts)
        for i, change in enumerate(plan.changes):
            block = _details(change, show_derived)
            if used + len(block) > MARKDOWN_BUDGET:
                rest = len(plan.changes) - i
                parts.append(f"_… and {rest} more resource{'s' * (rest != 1)}: too long for "
                             "one comment; run `reconcile plan` for the full list._")
                break
            parts.append(block)
            used += len(block) + 1
        if note := hidden_note(plan, show_derived):
            parts.append(f"_{note}_")
        parts.append("")
    if plan.credential_moves:
        parts += _moves_markdown(plan.credential_moves)
    if plan.unmanaged:
        keys = plan.unmanaged
        shown = ", ".join(f"`{k.kind} {k.namespace}/{k.name}`" for k in keys[:50])
        more = f" and {len(keys) - 50} more" if len(keys) > 50 else ""
        parts += [f"> [!NOTE]\n> {unmanaged_note(plan)} {shown}{more}", ""]
    about = [f"base revision {plan.base_revision}"]
    if plan.git.describe():
        about.append(plan.git.describe())
    about.append(f"plan digest `{plan.digest[:12]}`")
    parts.append(f"<sub>{html.escape(' · '.join(about), quote=False)}</sub>")
    return "\n".join(parts) + "\n"


def _moves_markdown(moves: tuple[CredentialMove, ...]) -> list[str]:
    def code(s: str) -> str:
        return _cell(f"<code>{html.escape(s)}</code>")

    n = len(moves)
    rows = [f"> [!WARNING]\n> **{n} credential move{'s' * (n != 1)}**: apply refuses "
            f"{'them' if n != 1 else 'it'} unless a maintainer approves with `{FLAG}`.", "",
            "| Resource | Credential | Bound to | Would be sent to | Approve with |",
            "|---|---|---|---|---|"]
    for m in moves:
        key = m.resource
        rows.append(f"| {code(f'{key.kind} {key.namespace}/{key.name}')} | {code(m.shown)} | "
                    f"{_cell(html.escape(m.source))} | {code(m.endpoint)} | "
                    f"{code(f'{FLAG} {m.approval}')} |")
    return [*rows, ""]


def markdown_invalid(errors: list[str]) -> str:
    """The PR comment when the config does not validate (no plan could be made)."""
    lines = [MARKER, "### reconcile plan", "", "**The configuration is invalid; no plan was "
             "made.**", ""]
    lines += [f"- {html.escape(e, quote=False)}" for e in errors]
    return "\n".join(lines) + "\n"


# -- json -----------------------------------------------------------------------


def data(plan: Plan) -> dict[str, Any]:
    return {
        "summary": {
            "create": plan.count(Action.CREATE),
            "update": plan.count(Action.UPDATE),
            "delete": plan.count(Action.DELETE),
            "unmanaged": len(plan.unmanaged),
            "credentialMoves": len(plan.credential_moves),
        },
        "hasChanges": plan.has_changes,
        "baseRevision": plan.base_revision,
        "lineage": plan.lineage,
        "desiredDigest": plan.desired_digest,
        "digest": plan.digest,
        "prune": plan.prune,
        "createdAt": plan.created_at.isoformat(),
        "git": plan.git.to_json(),
        "changes": [change_json(c, bodies=False) for c in plan.changes],
        "unmanaged": [k._asdict() for k in plan.unmanaged],
        "credentialMoves": [
            {**m.resource._asdict(), "credential": m.shown, "endpoint": m.endpoint,
             "boundTo": list(m.bound_to), "approval": m.approval}
            for m in plan.credential_moves
        ],
        "scope": ({**plan.scope.to_json(), "warning": plan.scope.warning()}
                  if plan.scope else None),
    }


def as_json(plan: Plan) -> str:
    # One line, like `terraform show -json`: the C encoder only runs without indent.
    return json.dumps(data(plan), ensure_ascii=False)


def render(plan: Plan, fmt: str, *, colour: bool = False, show_derived: bool = False) -> str:
    if fmt == "markdown":
        return markdown(plan, show_derived)
    if fmt == "json":
        return as_json(plan)  # for machines: every value, each marked
    return text(plan, colour=colour, show_derived=show_derived)
