"""`reconcile history`: View History (SPEC P4).

``reconcile history [KIND/NAME]`` lists revisions newest first; ``show``,
``as-of``, ``verify`` and ``export`` are subcommands.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from reconciler.cli.common import (
    UserError,
    action_counts,
    columns,
    finish,
    format_option,
    opened_store,
    parse_key,
    show_time,
    store_option,
    time_bound,
)
from reconciler.config.secrets import ENC_PREFIX, redact, redact_ref
from reconciler.history import queries
from reconciler.history.queries import yaml_stream
from reconciler.plan.render import SIGN
from reconciler.state import Action, FieldChange, HistoryFilter, Revision, RevisionKind


def shown_value(path: str, value: Any) -> str:
    """A field value as printed: JSON, with every secret reference redacted."""
    if path.endswith(".secretRef") and isinstance(value, str):
        return json.dumps(value if _fingerprinted(value) else redact_ref(value))
    return json.dumps(_redacted_once(value), ensure_ascii=False)


def _fingerprinted(ref: str) -> bool:
    return ref.startswith(ENC_PREFIX + "***")


def _redacted_once(value: Any) -> Any:
    """``redact``, except for references it already fingerprinted.

    Field diffs are stored redacted by the plan; redacting an encrypted
    reference twice would show a different fingerprint for the same value.
    """
    if isinstance(value, dict):
        ref = value.get("secretRef")
        if set(value) == {"secretRef"} and isinstance(ref, str):
            return value if _fingerprinted(ref) else redact(value)
        return {k: _redacted_once(v) for k, v in value.items()}
    return [_redacted_once(v) for v in value] if isinstance(value, list | tuple) else redact(value)


def field_lines(fields: Sequence[FieldChange]) -> list[str]:
    lines = []
    for f in fields:
        mark = "  (derived)" if f.derived else ""
        if f.before is None:
            lines.append(f"    {f.path}: {shown_value(f.path, f.after)}  (added){mark}")
        elif f.after is None:
            lines.append(f"    {f.path}: {shown_value(f.path, f.before)}  (removed)")
        else:
            lines.append(f"    {f.path}: {shown_value(f.path, f.before)} → "
                         f"{shown_value(f.path, f.after)}{mark}")
    return lines


class _HistoryGroup(click.Group):
    """`history KIND/NAME` lists; `history show 3` runs a subcommand.

    A click group cannot take an optional argument in front of its
    subcommands, so anything that is not a subcommand name goes to the
    hidden ``list`` command as its resource argument.
    """

    def resolve_command(self, ctx: click.Context, args: list[str],
                        ) -> tuple[str | None, click.Command | None, list[str]]:
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            if "/" not in args[0]:
                close = difflib.get_close_matches(args[0], self.list_commands(ctx), n=1)
                hint = f" (did you mean `history {close[0]}`?)" if close else ""
                raise UserError(f"{args[0]!r} is neither a history command nor KIND/NAME{hint}")
            return "list", self.commands["list"], args
        return super().resolve_command(ctx, args)


@click.group("history", cls=_HistoryGroup, invoke_without_command=True,
             subcommand_metavar="[KIND/NAME | COMMAND [ARGS]...]")
@click.option("--namespace", "-n", help="Only revisions touching this namespace.")
@click.option("--actor", help="Only revisions by this actor.")
@click.option("--since", callback=time_bound, metavar="ISO|AGE",
              help="Only revisions at or after this time (UTC unless a zone is given).")
@click.option("--until", callback=time_bound, metavar="ISO|AGE",
              help="Only revisions at or before this time (a bare date: the whole day).")
@click.option("--kind", "kinds", multiple=True, type=click.Choice([k.value for k in RevisionKind]),
              help="Only revisions of this kind (repeatable).")
@click.option("--limit", type=click.IntRange(min=1), help="Only the newest N matching revisions.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]),
              help="text (default) or json.")
@store_option
@click.pass_context
def command(ctx: click.Context, **params: Any) -> None:
    """The change history of the live store, newest first (View History).

    `reconcile history OutgoingServer/gmail-notifications -n acme` lists the
    revisions that touched one resource. Subcommands show one revision,
    rebuild the config as of a revision, verify the hash chain or export it.
    """
    if ctx.invoked_subcommand is None:
        _list(None, params)


# The group's options again, so that they may also follow KIND/NAME.
@command.command("list", hidden=True, params=list(command.params))
@click.argument("resource", required=False, metavar="[KIND/NAME]")
@click.pass_context
def list_command(ctx: click.Context, resource: str | None, **params: Any) -> None:
    parent = ctx.parent.params if ctx.parent is not None else {}
    merged = {k: v if v not in (None, ()) else parent.get(k) for k, v in params.items()}
    merged["store_url"] = _group_store(params["store_url"]) or parent.get("store_url")
    _list(resource, merged)


def _list(resource: str | None, p: dict[str, Any]) -> None:
    key = parse_key(resource, p["namespace"]) if resource else None
    flt = HistoryFilter(resource=key, namespace=None if key else p["namespace"],
                        actor=p["actor"], since=p["since"], until=p["until"], limit=p["limit"],
                        kinds=tuple(RevisionKind(k) for k in p["kinds"] or ()))
    with opened_store(p["store_url"]) as store:
        revs = store.revisions(flt)
        head = store.head()
    if p["fmt"] == "json":
        click.echo(json.dumps([queries.revision_to_dict(r) for r in revs], indent=2))
        return
    if not revs:
        click.echo("no revisions yet" if head == 0 else "no revisions match")
        return
    rows = [("REV", "TIME", "KIND", "ACTOR", "COMMIT", "CHANGES", "MESSAGE")]
    for r in revs:
        n = action_counts(r)
        rows.append((str(r.number), show_time(r.created_at), r.meta.kind.value, r.meta.actor,
                     (r.meta.git_commit or "-")[:7],
                     f"+{n[Action.CREATE]} ~{n[Action.UPDATE]} -{n[Action.DELETE]}",
                     next(iter((r.meta.message or "").splitlines()), "")))
    click.echo(columns(rows, right=1))


def _group_store(own: str | None) -> str | None:
    """The subcommand's ``--store``, else the one given to `history` itself.

    Lets ``history --store X show 1`` work like ``history show 1 --store X``;
    a command-line value beats $RECONCILE_STORE at either level.
    """
    ctx = click.get_current_context()
    parent = ctx.parent
    if (parent is not None
            and ctx.get_parameter_source("store_url") is not ParameterSource.COMMANDLINE
            and parent.get_parameter_source("store_url") is ParameterSource.COMMANDLINE):
        return parent.params["store_url"]  # type: ignore[no-any-return]
    return own


@command.command("show")
@click.argument("rev", type=click.IntRange(min=1), metavar="REV")
@format_option()
@store_option
def show_command(rev: int, fmt: str, store_url: str | None) -> None:
    """One revision: who, when, from which commit, and its field-level diff."""
    with opened_store(_group_store(store_url)) as store:
        revision = store.revision(rev)
    if fmt == "json":
        click.echo(json.dumps(queries.revision_to_dict(revision, bodies=True), indent=2))
        return
    click.echo("\n".join(_show_lines(revision)))


def _show_lines(rev: Revision) -> list[str]:
    m = rev.meta
    fields = (("time", show_time(rev.created_at)), ("actor", m.actor), ("message", m.message),
              ("commit", m.git_commit), ("branch", m.git_branch), ("pull req.", m.pull_request),
              ("desired", m.desired_digest), ("plan", m.plan_digest), ("hash", rev.hash),
              ("prev hash", rev.prev_hash))
    lines = [f"revision {rev.number}  ({m.kind.value})"]
    lines += [f"  {label + ':':<11} {value}" for label, value in fields if value]
    lines.append("")
    if m.credential_moves:
        lines.append("credential moves approved:")
        lines += [f"  ! {mv.resource}: {mv.credential} -> {mv.endpoint} (bound to "
                  f"{', '.join(mv.bound_to) or 'nowhere'}; approval {mv.approval} by "
                  f"{mv.approved_by})" for mv in m.credential_moves]
        lines.append("")
    if not rev.changes:
        lines.append("no resource changes")
    for change in rev.changes:
        lines.append(f"{SIGN[change.action]} {change.action.value} {change.key}")
        lines += field_lines(change.fields)
    return lines


@command.command("as-of")
@click.argument("rev", type=click.IntRange(min=0), metavar="REV")
@click.option("--out", "out_dir", type=click.Path(path_type=Path, file_okay=False),
              help="Write one file per namespace and kind below this (new or empty) folder.")
@click.option("--redact", "redacted", is_flag=True,
              help="Fingerprint encrypted secret references (the output then no longer "
              "validates).")
@store_option
def as_of_command(rev: int, out_dir: Path | None, redacted: bool, store_url: str | None) -> None:
    """The live config right after revision REV, as YAML that `reconcile validate` accepts.

    The store holds secret references only (env:, file:, enc:v1: ciphertext, the
    same as git holds), so the output can be committed back to restore a config.
    """
    with opened_store(_group_store(store_url)) as store:
        documents = queries.as_of_documents(store, rev)
    if redacted:
        documents = [{**d, "spec": redact(d["spec"])} for d in documents]
    if out_dir is None:
        click.echo(f"# live config as of revision {rev}: {len(documents)} resources")
        click.echo(yaml_stream(documents), nl=False)
        return
    _write_tree(out_dir, documents)
    click.echo(f"wrote {len(documents)} resources as of revision {rev} to {out_dir}/")


def _write_tree(out_dir: Path, documents: Sequence[dict[str, Any]]) -> None:
    if out_dir.exists() and any(out_dir.iterdir()):
        raise UserError(f"{out_dir} is not empty; files left there would be validated with "
                        "the rebuilt config. Give a new or empty folder.")
    groups: dict[Path, list[dict[str, Any]]] = {}
    for doc in documents:
        rel = Path(doc["metadata"]["namespace"]) / f"{doc['kind'].lower()}.yaml"
        groups.setdefault(rel, []).append(doc)
    try:
        for rel, docs in groups.items():
            (out_dir / rel).parent.mkdir(parents=True, exist_ok=True)
            (out_dir / rel).write_text(yaml_stream(docs), encoding="utf-8")
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot write to {out_dir}: {exc.strerror}") from None


@command.command("verify")
@format_option()
@store_option
def verify_command(fmt: str, store_url: str | None) -> None:
    """Recompute the hash chain; exit 1 naming the first revision that was tampered with."""
    with opened_store(_group_store(store_url)) as store:
        check = store.verify()
    if fmt == "json":
        click.echo(json.dumps(queries.chain_to_dict(check), indent=2))
    elif check.ok:
        click.echo(f"history OK: {check.checked} revision{'s' * (check.checked != 1)} "
                   "verified, the hash chain is intact")
    else:
        click.echo(
            f"history BROKEN at revision {check.first_broken}: {check.reason}\n"
            f"{check.checked} revision{'s' * (check.checked != 1)} before it verified.\n"
            "The store was changed outside reconcile. Do not apply until this is resolved:\n"
            f"  1. restore the store from a backup taken before revision {check.first_broken} "
            "was written (or that verifies), and\n"
            "  2. investigate who edited the database directly (database audit logs, who has "
            "the store's credentials or write access to its file).",
            err=True,
        )
    finish(0 if check.ok else 1)


@command.command("export")
@click.option("--format", "fmt", type=click.Choice(["json"]), default="json", show_default=True)
@click.option("--out", "out_file", type=click.Path(path_type=Path, dir_okay=False),
              help="Write to this file instead of standard output.")
@click.option("--with-bodies", is_flag=True,
              help="Also include each changed resource before and after (redacted).")
@store_option
def export_command(fmt: str, out_file: Path | None, with_bodies: bool,
                   store_url: str | None) -> None:
    """Every revision with its metadata, changes and hashes, oldest first, for auditors.

    Keep the head hash somewhere else (a ticket, a signed tag): a later export
    that still contains it proves nothing before it was rewritten.
    """
    with opened_store(_group_store(store_url)) as store:
        data = queries.export(store, bodies=with_bodies)
    text = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    if out_file is None:
        click.echo(text, nl=False)
    else:
        try:
            out_file.write_text(text, encoding="utf-8")
        except OSError as exc:
            raise UserError(f"cannot write {out_file}: {exc.strerror}") from None
        click.echo(f"wrote {len(data['revisions'])} revisions to {out_file}", err=True)
    if not data["verification"]["ok"]:
        click.echo(f"warning: the hash chain is broken: {data['verification']['reason']}; "
                   "run `reconcile history verify`", err=True)
