"""`reconcile incoming`: the incoming servers' fetch state, their error folders (SPEC I6, I7)."""

from __future__ import annotations

import asyncio
import json
import os
from datetime import datetime
from typing import Any

import click

from reconciler.cli.common import (
    UserError,
    format_option,
    opened_store,
    show_time,
    split_name,
    store_option,
    token_key_option,
)

KIND = "IncomingServer"
_namespace_option = click.option(
    "--namespace", "-n", help="Namespace of SERVER (default: default), or write NAMESPACE/NAME.")


@click.group("incoming")
def command() -> None:
    """Incoming mail servers: fetch status, error folder retry and details."""


@command.command("status")
@click.option("--namespace", "-n", help="Only servers of this namespace.")
@format_option()
@store_option
def status(namespace: str | None, fmt: str, store_url: str | None) -> None:
    """Per incoming server: last fetch, failures, last error, paused, error folder;
    and the ticket events waiting for the desk."""
    with opened_store(store_url) as store:
        live = store.snapshot()
        states = {(s.namespace, s.name): s for s in store.incoming.server_states(namespace)}
        counts = store.incoming.event_counts()
    rows = []
    for key, resource in sorted(live.resources.items()):
        if key.kind != KIND or namespace not in (None, key.namespace):
            continue
        state = states.get((key.namespace, key.name))
        data = state.to_json() if state is not None else {
            "namespace": key.namespace, "server": key.name, "consecutiveFailures": 0,
            "lastError": None, "lastFetch": None, "paused": None, "errorFolderCount": 0}
        spec = resource.spec
        rows.append(data | {"enabled": bool(spec.get("enabled", True)),
                            "protocol": spec.get("protocol"), "mailbox": spec.get("email")})
    if fmt == "json":
        click.echo(json.dumps({"servers": rows, "events": counts}, indent=2, ensure_ascii=False))
        return
    if not rows:
        where = f" in namespace {namespace}" if namespace else ""
        click.echo(f"no incoming servers{where} in the live store")
    for row in rows:
        click.echo("\n".join(_lines(row)))
        click.echo("")
    click.echo(f"ticket events: {counts['pending']} waiting for the desk, "
               f"{counts['delivered']} delivered, {counts['rejected']} rejected")


def _lines(row: dict[str, Any]) -> list[str]:
    head = f"{row['namespace']}/{row['server']} ({row['protocol']}, {row['mailbox']})"
    if not row["enabled"]:
        return [head + ": disabled"]
    if row.get("paused"):
        state = f"paused: {row['paused']}"
    elif row["consecutiveFailures"]:
        state = f"failing ({row['consecutiveFailures']} in a row)"
    elif row.get("lastFetch"):
        state = "fetching"
    else:
        state = "not fetched yet (is the daemon running?)"
    lines = [f"{head}: {state}"]
    for label, name in (("last fetch", "lastFetch"), ("last success", "lastSuccess")):
        if row.get(name):
            lines.append(f"  {label}: {show_time(datetime.fromisoformat(row[name]))}")
    if row["consecutiveFailures"] and row.get("lastError"):
        lines.append(f"  last error: {row['lastError']}")
    lines.append(f"  error folder: {row['errorFolderCount']} mail(s)")
    if row.get("fetchedBy"):
        lines.append(f"  fetched by: {row['fetchedBy']}")
    return lines


@command.command("retry")
@click.argument("server")
@_namespace_option
@click.option("--ca-file", metavar="PEM",
              help="Extra trusted CAs for a private mail server (as for the daemon).")
@token_key_option
@store_option
def retry(server: str, namespace: str | None, ca_file: str | None, token_key_ref: str | None,
          store_url: str | None) -> None:
    """Move the error folder's mails back, unread, so the daemon processes them again
    (and resumes fetching if stopFetchingAfter had stopped it)."""
    namespace, server = _name(server, namespace)
    from reconciler.incoming import retry as error_folder

    with opened_store(store_url) as store:
        try:
            job = error_folder.prepare(store, namespace, server, ca_file=ca_file,
                                       token_key_ref=token_key_ref)
            click.echo(asyncio.run(error_folder.move_back(job)))
        except error_folder.RetryRefused as exc:
            raise UserError(str(exc)) from None


class _ErrorsGroup(click.Group):
    """``errors SERVER`` lists (as it always did); ``errors export ID`` exports one."""

    def resolve_command(self, ctx: click.Context, args: list[str]) -> Any:
        if args and args[0] not in self.commands:
            args = ["list", *args]
        return super().resolve_command(ctx, args)


@command.group("errors", cls=_ErrorsGroup)
def errors() -> None:
    """Mails moved to the error folder: `errors SERVER` lists their saved details,
    `errors export ID --out FILE` writes one for support."""


def _sealed_store(store: Any, token_key_ref: str | None) -> Any:
    from reconciler.incoming.store import IncomingStore
    from reconciler.oauth.cache import TokenKeyError, load_key

    try:
        return IncomingStore.of_store(store, load_key(token_key_ref))
    except TokenKeyError as exc:
        raise UserError(f"the details are stored encrypted: {exc}") from None


@errors.command("list")
@click.argument("server")
@_namespace_option
@click.option("--all", "include_all", is_flag=True, help="Also mails already moved back.")
@token_key_option
@store_option
def list_errors(server: str, namespace: str | None, include_all: bool,
                token_key_ref: str | None, store_url: str | None) -> None:
    """The saved details (reason, headers) of mails moved to the error folder, decrypted
    with the store's sealing key."""
    namespace, server = _name(server, namespace)
    with opened_store(store_url) as store:
        found = _sealed_store(store, token_key_ref).errors(namespace, server,
                                                           include_moved_back=include_all)
    if not found:
        click.echo(f"no mails of {namespace}/{server} in the error folder")
        return
    for record in found:
        moved = f", moved back {show_time(record.moved_back_at)}" if record.moved_back_at else ""
        click.echo(f"#{record.id} {show_time(record.created_at)} {record.code}{moved}")
        if record.details is None:
            why = ("details were not saved (no sealing key was set)" if not record.sealed
                   else "details cannot be decrypted with this key")
            click.echo(f"  {why}")
            continue
        click.echo(f"  reason: {record.details.get('reason')}")
        click.echo(f"  stage: {record.details.get('stage')}; "
                   f"Message-ID: {record.details.get('messageId') or '-'}")
        for line in str(record.details.get("headers", "")).splitlines()[:40]:
            click.echo(f"  | {line}")


@errors.command("export")
@click.argument("error_id", metavar="ID", type=int)
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False),
              help="The file to write (a .eml: the mail with the failure details as "
              "X-Reconciler-Error-* headers on top).")
@click.option("--force", is_flag=True, help="Overwrite FILE if it exists.")
@token_key_option
@store_option
def export(error_id: int, out: str, force: bool, token_key_ref: str | None,
           store_url: str | None) -> None:
    """Write one error-folder mail (ID as `errors SERVER` lists it), decrypted, with why it
    failed, for support. The file holds the customer's mail: hand it on with care."""
    from reconciler.cli.error_export import export_text

    with opened_store(store_url) as store:
        record = _sealed_store(store, token_key_ref).error(error_id)
    if record is None:
        raise UserError(f"there is no error-folder entry #{error_id}; `reconcile incoming "
                        "errors SERVER --all` lists them")
    if record.details is None:
        raise UserError(f"#{error_id}: " + (
            "the details were not saved (no sealing key was set when it failed)"
            if not record.sealed else "the details cannot be decrypted with this key"))
    data, note = export_text(record)
    try:
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if force else os.O_EXCL),
                     0o600)  # the customer's mail: readable by its owner only
    except FileExistsError:
        raise UserError(f"{out} exists; pass --force to overwrite it") from None
    except OSError as exc:
        raise UserError(f"cannot write {out}: {exc.strerror or exc}") from None
    with os.fdopen(fd, "wb") as file:
        file.write(data)
    click.echo(f"wrote #{error_id} of {record.namespace}/{record.server} ({record.code}) to "
               f"{out}{note}")


def _name(text: str, namespace: str | None) -> tuple[str, str]:
    ns, name = split_name(text, namespace, KIND)
    return ns or "default", name
