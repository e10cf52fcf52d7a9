"""`reconcile audit`: search the email audit (SPEC O8).

Reads the store directly (no daemon needed), newest first, as a table or as
the JSON list ``GET /v1/audit`` answers with.
"""

from __future__ import annotations

import json
from datetime import datetime

import click

from reconciler.cli.common import (
    columns,
    format_option,
    opened_store,
    show_time,
    store_option,
    time_bound,
)
from reconciler.state.base import AuditDirection, AuditStatus

COLUMNS = ("TIME", "STATUS", "SERVER", "HOST", "ATTEMPT", "RECIPIENT", "MESSAGE-ID", "REASON")


def _cell(value: object) -> str:
    if value is None:
        return "-"
    # One entry, one line: a multi-line server reply must not break the table.
    return " ".join(str(value).split()) or "-"


@click.command("audit")
@click.option("--status", "statuses", multiple=True, metavar="STATUS",
              type=click.Choice([s.value for s in AuditStatus], case_sensitive=False),
              help="Only this status (repeatable): SENT, SEND_FAILED, SEND_IGNORED, RETRYING, "
              "BOUNCED, ...")
@click.option("--recipient", metavar="ADDRESS",
              help="Only this recipient (whole address, any case).")
@click.option("--server", metavar="NAME", help="Only entries of this server.")
@click.option("--since", callback=time_bound, metavar="ISO|AGE",
              help="At or after: ISO date/time (UTC unless a zone is given) or an age like 2h.")
@click.option("--until", callback=time_bound, metavar="ISO|AGE",
              help="At or before: ISO date/time (a bare date: the whole day) or an age.")
@click.option("--direction", type=click.Choice([d.value for d in AuditDirection]),
              help="outgoing (sending) or incoming (fetching).")
@click.option("--namespace", "-n", metavar="NS", help="Only this namespace.")
@click.option("--outbox-id", type=click.IntRange(min=1), metavar="ID",
              help="Only entries of this notification (the id intake answered with).")
@click.option("--message-id", metavar="ID", help="Only this Message-ID (with or without <>).")
@click.option("--limit", type=click.IntRange(min=1), default=100, show_default=True,
              help="At most this many entries, newest first.")
@click.option("--offset", type=click.IntRange(min=0), default=0,
              help="Skip this many newest entries first (paging).")
@format_option()
@store_option
def command(statuses: tuple[str, ...], recipient: str | None, server: str | None,
            since: datetime | None, until: datetime | None, direction: str | None,
            namespace: str | None, outbox_id: int | None, message_id: str | None, limit: int,
            offset: int, fmt: str, store_url: str | None) -> None:
    """Search the email audit: what was sent, failed, ignored or retried, and why.

    \b
    Examples:
      reconcile audit --status SEND_FAILED --since 1d
      reconcile audit --recipient jane@example.com --format json
    """
    with opened_store(store_url) as store:
        entries = store.audit.search(
            status=[AuditStatus(s.upper()) for s in statuses] or None,
            recipient=recipient, server=server, since=since, until=until,
            direction=direction, namespace=namespace, outbox_id=outbox_id,
            message_id=message_id, limit=limit, offset=offset,
        )
    if fmt == "json":
        from reconciler.daemon.api.schemas import AuditItem

        items = [AuditItem.from_entry(e).model_dump(mode="json", by_alias=True) for e in entries]
        click.echo(json.dumps(items, indent=2, ensure_ascii=False))
    elif entries:
        click.echo(columns([COLUMNS, *(
            (show_time(e.created_at) if e.created_at else "-", e.status.value, _cell(e.server),
             _cell(e.host), _cell(e.attempt), _cell(e.recipient), _cell(e.message_id),
             _cell(e.reason))
            for e in entries
        )]))
    else:
        click.echo("no audit entries match", err=True)
