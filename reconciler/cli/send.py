"""`reconcile send`: put one notification into the outbox (SPEC O1).

The command returns once the notification is durably stored ("accepted");
a running daemon sends it. It prints the outbox id, followed by
``duplicate`` when the idempotency key was already known in the namespace
(nothing new was stored; the id is the message stored first).

Like the intake API, it refuses up front what could only fail later: a
namespace without outgoing servers in the live store, and attachments over the
limit of a server that refuses them. Attachments the routed server will leave
out are named on stderr; the id on stdout stays the only output scripts read.
"""

from __future__ import annotations

import mimetypes
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import click
from pydantic import ValidationError

from reconciler.cli.common import UserError, opened_store, store_option
from reconciler.dispatch.oversize import routed_oversized
from reconciler.mail.envelope import Notification, plain_error
from reconciler.runtime.namespace import NamespaceConfig
from reconciler.state import Store

context_option = click.option(
    "--set", "fields", multiple=True, metavar="FIELD=VALUE",
    help="A context field routing rules test (department, technicianGroup, site, "
    "location, ...); repeat for more.",
)


def parse_context(fields: Sequence[str]) -> dict[str, str]:
    context: dict[str, str] = {}
    for item in fields:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise UserError(f"--set {item!r}: write FIELD=VALUE, e.g. --set department=HR")
        context[name.strip()] = value
    return context


def _attachment(path: Path) -> dict[str, Any]:
    guessed, _ = mimetypes.guess_type(path.name)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read attachment {path}: {exc.strerror}") from None
    return {"name": path.name, "contentType": guessed or "application/octet-stream", "data": data}


def _ticket(value: str | None) -> dict[str, str] | None:
    if value is None:
        return None
    module, sep, number = value.partition("/")
    if not sep or not module.strip() or not number.strip():
        raise UserError(f"--ticket {value!r}: write MODULE/ID, e.g. --ticket request/123")
    return {"module": module.strip(), "id": number.strip()}


def _namespace_config(store: Store, namespace: str, omitted: bool) -> NamespaceConfig:
    """The namespace's config in the live store; a UserError naming the configured
    namespaces when it has no outgoing server to send with."""
    live = store.snapshot()
    configured = sorted({key.namespace for key in live.resources if key.kind == "OutgoingServer"})
    if namespace not in configured:
        given = (f"no --namespace given: namespace {namespace!r}" if omitted
                 else f"namespace {namespace!r}")
        known = (f"Configured namespaces: {', '.join(configured)}; give one with --namespace."
                 if configured else "No namespace has one yet: apply a config with an "
                 "OutgoingServer first.")
        raise UserError(f"{given} has no outgoing server in the live store (revision "
                        f"{live.revision}): nothing would send the notification. {known} "
                        "Nothing was queued.")
    try:
        return NamespaceConfig.from_canonical(namespace, live.resources.values())
    except ValidationError as exc:
        raise UserError(f"namespace {namespace!r} at revision {live.revision} does not "
                        f"validate ({exc.error_count()} problems), so the daemon skips it; "
                        "apply a fixed config. Nothing was queued.") from None


def _check_attachments(config: NamespaceConfig, notification: Notification) -> None:
    """Refuse attachments the routed server refuses; name on stderr the ones it drops."""
    oversized = routed_oversized(config, notification)
    if oversized is None:
        return
    if oversized.refused:
        problems = "\n".join(f"  --attach {item.name}: {oversized.refusal(item)}"
                             for _, item in oversized.dropped)
        raise UserError(f"attachments over the limit:\n{problems}\nNothing was queued.")
    for _, item in oversized.dropped:
        click.echo(f"warning: --attach {item.name} will be left out by server "
                   f"{oversized.server}: {item.reason}", err=True)


@click.command("send")
@click.option("--namespace", default="default", show_default=True, metavar="NS",
              help="The MSP account / tenant whose servers send it; it must have an "
              "outgoing server in the live store.")
@click.option("--module", required=True, metavar="MODULE",
              help="request, problem, change, task, ...: picks the routing rules.")
@click.option("--to", "to", multiple=True, required=True, metavar="ADDR",
              help="Recipient, 'jane@example.com' or 'Jane <jane@example.com>'; repeatable.")
@click.option("--cc", multiple=True, metavar="ADDR", help="Copy recipient; repeatable.")
@click.option("--bcc", multiple=True, metavar="ADDR",
              help="Blind copy recipient (envelope only); repeatable.")
@click.option("--subject", required=True)
@click.option("--text", help="Plain-text body.")
@click.option("--text-file", type=click.File("r", encoding="utf-8"),
              metavar="FILE", help="Read the plain-text body from FILE ('-' for stdin).")
@click.option("--html-file", type=click.File("r", encoding="utf-8"), metavar="FILE",
              help="Read an HTML body from FILE.")
@click.option("--attach", multiple=True, metavar="FILE",
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Attach FILE; repeatable. Attachments over the routed server's limit "
              "are named on stderr and left out (named in the audit too), or refused when "
              "the server's attachments.oversize is refuse.")
@context_option
@click.option("--ticket", metavar="MODULE/ID",
              help="The ticket this is about, e.g. request/123: replies to the sent mail "
              "are threaded to it by their headers, whatever their subject says.")
@click.option("--idempotency-key", metavar="KEY",
              help="Submitting the same key again in the namespace stores nothing new.")
@store_option
def command(namespace: str, module: str, to: tuple[str, ...], cc: tuple[str, ...],
            bcc: tuple[str, ...], subject: str, text: str | None, text_file: IO[str] | None,
            html_file: IO[str] | None, attach: tuple[Path, ...], fields: tuple[str, ...],
            ticket: str | None, idempotency_key: str | None,
            store_url: str | None) -> None:
    """Queue a notification for the daemon; print its outbox id.

    Accepted means stored: once this prints the id, the notification survives
    crashes and restarts until a daemon has sent it (or given up, see
    `reconcile audit`).
    """
    if (text is None) == (text_file is None):
        raise UserError("give the body with exactly one of --text and --text-file")
    body = text if text is not None else text_file.read()  # type: ignore[union-attr]
    document = {
        "module": module, "namespace": namespace, "context": parse_context(fields),
        "to": list(to), "cc": list(cc), "bcc": list(bcc), "subject": subject, "textBody": body,
        "htmlBody": html_file.read() if html_file is not None else None,
        "attachments": [_attachment(p) for p in attach], "idempotencyKey": idempotency_key,
        "ticket": _ticket(ticket),
    }
    try:
        notification = Notification.model_validate(document)
    except ValidationError as exc:
        problems = "\n".join(f"  {plain_error(e)}" for e in exc.errors())
        raise UserError(f"the notification is not valid:\n{problems}") from None
    omitted = (click.get_current_context().get_parameter_source("namespace")
               == click.core.ParameterSource.DEFAULT)
    with opened_store(store_url) as store:
        config = _namespace_config(store, namespace, omitted)
        _check_attachments(config, notification)
        result = store.outbox.enqueue(notification, namespace=namespace,
                                      idempotency_key=idempotency_key)
    click.echo(f"{result.id} duplicate" if result.duplicate else str(result.id))
