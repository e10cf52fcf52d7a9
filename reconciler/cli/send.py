"""`reconcile send`: put one notification into the outbox (SPEC O1).

The command returns once the notification is durably stored ("accepted");
a running daemon sends it. It prints the outbox id, followed by
``duplicate`` when the idempotency key was already known in the namespace
(nothing new was stored; the id is the message stored first).
"""

from __future__ import annotations

import mimetypes
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any, TypeVar

import click

from reconciler.cli.common import UserError, opened_store, store_option

F = TypeVar("F", bound=Callable[..., Any])


def context_option(f: F) -> F:
    """``--set field=value`` (repeatable): the context fields routing rules test."""
    return click.option(
        "--set", "fields", multiple=True, metavar="FIELD=VALUE",
        help="A context field routing rules test (department, technicianGroup, site, "
        "location, ...); repeat for more.",
    )(f)


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
    return {"name": path.name, "contentType": guessed or "application/octet-stream",
            "data": data}


def _ticket(value: str | None) -> dict[str, str] | None:
    if value is None:
        return None
    module, sep, number = value.partition("/")
    if not sep or not module.strip() or not number.strip():
        raise UserError(f"--ticket {value!r}: write MODULE/ID, e.g. --ticket request/123")
    return {"module": module.strip(), "id": number.strip()}


@click.command("send")
@click.option("--namespace", default="default", show_default=True, metavar="NS",
              help="The MSP account / tenant whose servers send it.")
@click.option("--module", required=True, metavar="MODULE",
              help="request, problem, change, task, ...: picks the routing rules.")
@click.option("--to", "to", multiple=True, required=True, metavar="ADDR",
              help="Recipient, 'jane@example.com' or 'Jane <jane@example.com>'; repeatable.")
@click.option("--cc", multiple=True, metavar="ADDR", help="Copy recipient; repeatable.")
@click.option("--bcc", multiple=True, metavar="ADDR",
              help="Blind copy recipient (envelope only); repeatable.")
@click.option("--subject", required=True)
@click.option("--text", default=None, help="Plain-text body.")
@click.option("--text-file", type=click.File("r", encoding="utf-8"), default=None,
              metavar="FILE", help="Read the plain-text body from FILE ('-' for stdin).")
@click.option("--html-file", type=click.File("r", encoding="utf-8"), default=None,
              metavar="FILE", help="Read an HTML body from FILE.")
@click.option("--attach", multiple=True, metavar="FILE",
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Attach FILE; repeatable. Attachments over the server's limit are "
              "dropped at send time and named in the audit.")
@context_option
@click.option("--ticket", default=None, metavar="MODULE/ID",
              help="The ticket this is about, e.g. request/123: replies to the sent mail "
              "are threaded to it by their headers, whatever their subject says.")
@click.option("--idempotency-key", default=None, metavar="KEY",
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
    from pydantic import ValidationError

    from reconciler.dispatch.envelope import Notification, plain_error

    if (text is None) == (text_file is None):
        raise UserError("give the body with exactly one of --text and --text-file")
    body = text if text is not None else text_file.read()  # type: ignore[union-attr]
    document = {
        "module": module,
        "namespace": namespace,
        "context": parse_context(fields),
        "to": list(to),
        "cc": list(cc),
        "bcc": list(bcc),
        "subject": subject,
        "textBody": body,
        "htmlBody": html_file.read() if html_file is not None else None,
        "attachments": [_attachment(p) for p in attach],
        "idempotencyKey": idempotency_key,
        "ticket": _ticket(ticket),
    }
    try:
        notification = Notification.model_validate(document)
    except ValidationError as exc:
        problems = "\n".join(f"  {plain_error(e)}" for e in exc.errors())
        raise UserError(f"the notification is not valid:\n{problems}") from None
    with opened_store(store_url) as store:
        result = store.outbox.enqueue(notification, namespace=namespace,
                                      idempotency_key=idempotency_key)
    click.echo(f"{result.id} duplicate" if result.duplicate else str(result.id))
