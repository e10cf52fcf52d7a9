"""`reconcile live list|get|set`: read or change the live store outside git (SPEC P5, X7).

`live set` is the out-of-band edit an admin makes in an emergency ("disable
that server now"). The edited resource runs through the same pipeline as
`validate` (model, derived defaults, references, semantic checks, policies):
what its kind's model rejects, or a reference to nothing, is refused, so the
live store never holds a spec the daemon cannot use; the stored form is the
same canonical form an apply writes. It is recorded as an OUT_OF_BAND
revision with actor and reason, which `reconcile drift` then reports.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

import click
import yaml
from pydantic import ValidationError

from reconciler.cli.common import UserError, format_option, opened_store, parse_key, store_option
from reconciler.cli.history import field_lines, yaml_stream
from reconciler.cli.render import diagnostic_text
from reconciler.config.desired import CanonicalResource, DesiredState, ResourceKey
from reconciler.config.diagnostics import Diagnostics
from reconciler.config.loader import Document
from reconciler.config.models import KINDS
from reconciler.config.secret_checks import CODE as SECRET_PLACE
from reconciler.config.secrets import FIX_HINT, SecretRef, redact
from reconciler.plan.apply import resolve_actor
from reconciler.plan.diff import diff
from reconciler.plan.render import SIGN
from reconciler.policy.validate import ValidationResult, canonical, validate_documents
from reconciler.state import Change, LiveState, RevisionKind, RevisionMeta
from reconciler.state.codec import SECRET_FIELDS

_NOT_SPEC = ("metadata", "apiVersion", "kind", "status")


@dataclass(frozen=True, slots=True)
class Assignment:
    path: tuple[str, ...]  # below spec, e.g. ("auth", "clientSecret")
    value: Any  # None: remove the field (back to its default)

    @property
    def dotted(self) -> str:
        return ".".join(("spec", *self.path))


@click.group("live")
def command() -> None:
    """Read or change the live store directly (recorded as out-of-band)."""


@command.command("list")
@click.option("--namespace", "-n", "namespaces", multiple=True, help="Only this namespace "
              "(repeatable).")
@click.option("--kind", "-k", "kinds", multiple=True, help="Only this kind (repeatable).")
@format_option()
@store_option
def list_command(namespaces: tuple[str, ...], kinds: tuple[str, ...], fmt: str,
                 store_url: str | None) -> None:
    """List the resources the live store holds, by kind, namespace and name."""
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown:
        raise UserError(f"unknown kind {', '.join(unknown)}; kinds are {', '.join(sorted(KINDS))}")
    with opened_store(store_url) as store:
        live = store.snapshot()
    keys = sorted(k for k in live.resources if (not namespaces or k.namespace in namespaces)
                  and (not kinds or k.kind in kinds))
    if fmt == "json":
        click.echo(json.dumps({"revision": live.revision, "resources": [
            {"kind": k.kind, "namespace": k.namespace, "name": k.name,
             "labels": dict(live.resources[k].labels)} for k in keys]}, indent=2,
            ensure_ascii=False))
        return
    for key in keys:
        click.echo(str(key))
    scope = f" in {', '.join(namespaces)}" if namespaces else ""
    click.echo(f"{len(keys)} of {len(live)} resources{scope} at revision {live.revision}", err=True)


@command.command("get")
@click.argument("resource", metavar="KIND/NAME")
@click.option("--namespace", "-n")
@format_option("yaml", "json")
@store_option
def get_command(resource: str, namespace: str | None, fmt: str, store_url: str | None) -> None:
    """Print one resource as the live store holds it (secrets redacted)."""
    key = parse_key(resource, namespace)
    with opened_store(store_url) as store:
        live = store.snapshot()
    doc = _find(live, key).to_document()
    doc["spec"] = redact(doc["spec"])
    if fmt == "json":
        click.echo(json.dumps({"revision": live.revision, "resource": doc}, indent=2,
                              ensure_ascii=False))
        return
    click.echo(f"# {key} as live at revision {live.revision}")
    click.echo(yaml_stream([doc]), nl=False)


@command.command("set")
@click.argument("resource", metavar="KIND/NAME")
@click.argument("assignments", nargs=-1, required=True, metavar="FIELD=VALUE...")
@click.option("--namespace", "-n")
@click.option("--actor", metavar="NAME", help="Who makes the change, for the history "
              "(default: the CI user, then the OS user).")
@click.option("--reason", default="", help="Why; recorded as the revision's message.")
@click.option("--lock-timeout", type=click.FloatRange(min=0), default=30.0, show_default=True,
              help="Seconds to wait for a running apply to finish.")
@store_option
def set_command(resource: str, assignments: Sequence[str], namespace: str | None,
                actor: str | None, reason: str, lock_timeout: float, store_url: str | None,
                ) -> None:
    """Change spec fields of a live resource, e.g. `spec.enabled=false`.

    VALUE is YAML: true/false, numbers, text, [lists] or {secretRef: env:NAME}
    for secret fields (literal secrets are refused). FIELD=null removes the
    field, so its default applies again. `spec.` may be left out.
    """
    key = parse_key(resource, namespace)
    edits = [_parse_assignment(i, text) for i, text in enumerate(assignments, 1)]
    who = resolve_actor(actor)
    with opened_store(store_url) as store, \
            store.lock(who, "live set", timeout=lock_timeout):
        live = store.snapshot()
        change = _change(live, key, edits)
        if change is None:
            click.echo(f"no change: {key} already has those values (revision {live.revision})")
            return
        message = reason or "live set " + ", ".join(e.dotted for e in edits)
        rev = store.commit([change], RevisionMeta(actor=who, message=message,
                                                  kind=RevisionKind.OUT_OF_BAND),
                           base_revision=live.revision)
    click.echo(f"revision {rev.number} ({RevisionKind.OUT_OF_BAND.value}) by {who}: "
               f"{SIGN[change.action]} {key}")
    click.echo("\n".join(field_lines(change.fields)))
    click.echo("git still says otherwise: `reconcile drift` reports this change and the next "
               "apply reverts it unless git is changed too.")


def _parse_assignment(index: int, text: str) -> Assignment:
    # Never echo the argument itself: it may be a secret typed into the wrong place.
    name, sep, raw = text.partition("=")
    name = name.strip()
    if not sep or not name:
        raise UserError(f"argument {index} is not FIELD=VALUE (e.g. spec.enabled=false)")
    parts = tuple(name.split("."))
    if parts[0] in _NOT_SPEC:
        raise UserError(f"{name}: only spec fields can be set live ({parts[0]} comes from git"
                        f"{' or the daemon' if parts[0] == 'status' else ''})")
    if parts[0] == "spec":
        parts = parts[1:]
    if not parts or not all(parts):
        raise UserError(f"{name!r} is not a field path; write e.g. spec.auth.clientId")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        raise UserError(f"spec.{'.'.join(parts)}: the value is not valid YAML; quote text "
                        "that contains ':', '#', '{' or '['") from None
    if isinstance(value, date):
        value = raw.strip()  # YAML would make 2024-05-01 a date; specs hold text
    return Assignment(parts, value)


def _find(live: LiveState, key: ResourceKey) -> CanonicalResource:
    res = live.resources.get(key)
    if res is not None:
        return res
    same_kind = [str(k) for k in live.resources if k.kind == key.kind]
    close = difflib.get_close_matches(str(key), same_kind, n=1)
    hint = f"; did you mean {close[0]}?" if close else ""
    raise UserError(f"{key} is not in the live store (revision {live.revision}){hint}")


def _change(live: LiveState, key: ResourceKey, edits: Sequence[Assignment]) -> Change | None:
    old = _find(live, key)
    doc = json.loads(json.dumps(old.to_document()))  # a deep, plain copy to edit
    for edit in edits:
        _assign(doc["spec"], edit)
    new = _validated(live, key, doc)
    if new.digest == old.digest:
        return None
    # The plan's diff gives the field-level, redacted view the history stores.
    [change] = diff(DesiredState.of([new]), LiveState(live.lineage, live.revision,
                                                      {key: old})).changes
    return change


def _assign(spec: dict[str, Any], edit: Assignment) -> None:
    """Set (or with None remove) one field, refusing a literal secret before it is set."""
    node: Any = spec
    for depth, part in enumerate(edit.path):
        where = ".".join(("spec", *edit.path[:depth]))
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise UserError(f"{where} is a list of {len(node)}; {part!r} is not an index "
                                f"in it (0 to {len(node) - 1})")
            slot: int | str = int(part)
        elif isinstance(node, dict):
            slot = part
        else:
            raise UserError(f"{where} is a single value, it has no field {part!r}")
        if depth < len(edit.path) - 1:
            node = node[slot] if isinstance(node, list) else node.setdefault(slot, {})
    current = node[slot] if isinstance(node, list) else node.get(slot)
    _refuse_literal_secret(current, edit)
    if edit.value is not None:
        node[slot] = edit.value
    elif isinstance(node, list):
        node.pop(slot)
    else:
        node.pop(slot, None)


def _refuse_literal_secret(current: Any, edit: Assignment) -> None:
    is_secret = edit.path[-1] in SECRET_FIELDS or (
        isinstance(current, dict) and set(current) == {"secretRef"})
    if not is_secret or edit.value is None:
        return
    try:
        SecretRef.model_validate(edit.value)
    except ValidationError:
        # The value is not shown: it is most likely the secret itself.
        raise UserError(
            f"{edit.dotted} is a secret field: the live store keeps only references, never "
            f"the secret. Refused; nothing was written. {FIX_HINT}, e.g. "
            f"'{edit.dotted}={{secretRef: env:NAME}}'"
        ) from None


def _validated(live: LiveState, key: ResourceKey, doc: dict[str, Any]) -> CanonicalResource:
    """The edited resource, checked in the context of the whole live config.

    A spec its kind's model rejects, or one pointing at a resource that does
    not exist, is refused: the daemon could not use it. Other errors the edit
    introduces (semantic checks, policies) are shown but do not block, since
    disabling the primary server in an emergency is exactly what this
    command is for, and `validate` rejects that state in git.
    """
    label = f"{key} (live)"
    docs = {k: r.to_document() for k, r in live.resources.items()}
    after = _validate({**docs, key: doc})
    new_errors = after.diagnostics.errors
    if new_errors:
        before = set(_validate(docs).diagnostics.errors)
        new_errors = [d for d in new_errors if d not in before]
    # A secret reference outside the allowed places is never needed in an emergency,
    # and the daemon would refuse to resolve it anyway (SPEC S2).
    blocking = [d for d in new_errors if d.file == label and (
        d.code.startswith("schema:") or d.code in ("dangling-reference", SECRET_PLACE))]
    if blocking:
        lines = "\n".join("  " + diagnostic_text(d) for d in blocking)
        raise UserError(f"cannot set {key}: the result would not be valid; nothing was "
                        f"written.\n{lines}")
    for d in new_errors:
        click.echo(f"warning: `reconcile validate` would reject this in git: "
                   f"{diagnostic_text(d)}", err=True)
    for res in after.resources:
        if res.key == tuple(key):
            return canonical(res)
    raise UserError(f"cannot set {key}: it did not validate")  # pragma: no cover


def _validate(docs: dict[ResourceKey, dict[str, Any]]) -> ValidationResult:
    # Same file label in both runs, so diagnostics that existed before compare equal.
    documents = [Document(f"{k} (live)", 0, d) for k, d in docs.items()]
    return validate_documents(documents, Diagnostics())
