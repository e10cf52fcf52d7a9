"""`reconcile outbox`: look at and control the outbox (SPEC O13), Postfix's
``mailq`` (list, show), ``postqueue -f`` (retry) and ``postsuper`` (hold,
release, cancel, requeue) for notifications.

Works on the store directly, like ``reconcile audit``: a running daemon sees
a change at its next claim (within its poll interval). Every action is
audited with ``--actor`` (default: the CI user, else the OS user, as for
apply). Hold and cancel never touch a message a worker is sending right now;
they wait (``--wait``) for that attempt to end and then act, or report that
it was sent.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import click

from reconciler.cli.common import (
    UserError,
    columns,
    finish,
    format_option,
    opened_store,
    parse_time,
    show_time,
    store_option,
)
from reconciler.runtime.queue_control import (
    WAITS_FOR_FLIGHT,
    Action,
    QueueError,
    done_text,
    perform,
    refusal,
    requeue_target,
    selection,
)
from reconciler.state.base import OutboxState, Store
from reconciler.state.outbox_control import ControlResult, QueueFilter

F = Callable[..., Any]


@click.group("outbox")
def command() -> None:
    """List, inspect, retry, hold, release, cancel or requeue queued notifications."""


def _age(_ctx: click.Context, _param: click.Parameter, value: str | None) -> datetime | None:
    return None if value is None else parse_time(value, end_of_day=False)


@command.command("list")
@click.option("--state", "states", multiple=True, metavar="STATE",
              type=click.Choice([s.value for s in OutboxState]),
              help="Only this state (repeatable). Default: every unfinished state.")
@click.option("--server", metavar="NAME", help="Only messages routed through this server.")
@click.option("--namespace", "-n", metavar="NS")
@click.option("--older-than", "--age", "older", callback=_age, metavar="AGE|ISO",
              help="Only messages accepted before: an age like 30m, 2h, 1d, or a time.")
@click.option("--recipient", metavar="ADDRESS", help="Only mail to this address (any case).")
@click.option("--limit", type=click.IntRange(min=1), default=100, show_default=True)
@click.option("--offset", type=click.IntRange(min=0), default=0)
@format_option()
@store_option
def list_(states: tuple[str, ...], server: str | None, namespace: str | None,
          older: datetime | None, recipient: str | None, limit: int, offset: int, fmt: str,
          store_url: str | None) -> None:
    """Messages in the outbox with their state, server and last error; counts by state.

    \b
    Examples:
      reconcile outbox list --state retry_wait --server hr-relay
      reconcile outbox list --older-than 1h --format json
    """
    from reconciler.daemon.api.queue_models import QueueItem, QueueListing

    chosen = tuple(OutboxState(s) for s in states) or tuple(
        s for s in OutboxState if not s.terminal)
    where = QueueFilter(states=chosen, namespace=namespace, server=server,
                        created_before=older, recipient=recipient)
    with opened_store(store_url) as store:
        found = store.outbox.search(where, limit=limit, offset=offset)
        counts = store.outbox.count(where)
    listing = QueueListing(messages=[QueueItem.of(m) for m in found], counts=counts)
    if fmt == "json":
        click.echo(json.dumps(listing.model_dump(mode="json", by_alias=True), indent=2,
                              ensure_ascii=False))
        return
    if found:
        click.echo(columns([("ID", "STATE", "NAMESPACE", "SERVER", "TRIES", "ACCEPTED",
                             "NEXT", "RECIPIENTS", "LAST ERROR"), *(
            (str(i.id), i.state.value, i.namespace, i.server or "-", str(i.attempts),
             show_time(i.created_at), show_time(i.next_attempt_at), ",".join(i.recipients),
             _line(i.last_error)) for i in listing.messages)], right=1))
    shown = ", ".join(f"{n} {s.value}" for s, n in counts.items() if n) or "no messages"
    click.echo(f"{sum(counts.values())} matching: {shown}", err=not found)


def _line(text: str | None, width: int = 80) -> str:
    flat = " ".join((text or "-").split())
    return flat if len(flat) <= width else flat[: width - 3] + "..."


@command.command("show")
@click.argument("id", type=click.IntRange(min=1))
@format_option()
@store_option
def show(id: int, fmt: str, store_url: str | None) -> None:
    """One message: routing decision (rule matched, rules skipped and why, server,
    alternates), every attempt with its time and errors, and operator actions."""
    from reconciler.daemon.api.queue_models import QueueMessage

    with opened_store(store_url) as store:
        message = store.outbox.get(id)
        if message is None:
            raise UserError(f"there is no outbox message {id} (never accepted, or purged "
                            "after it was finished); `reconcile outbox list` shows them")
        entries = store.audit.search(outbox_id=id, limit=None)
    view = QueueMessage.with_audit(message, entries)
    if fmt == "json":
        click.echo(json.dumps(view.model_dump(mode="json", by_alias=True), indent=2,
                              ensure_ascii=False))
        return
    click.echo(_render(view))


def _render(v: Any) -> str:
    lines = [f"message {v.id}  {v.state.value}  namespace {v.namespace}  module "
             f"{v.module or '-'}", f"  subject: {v.subject or '-'}",
             f"  recipients: {', '.join(v.recipients) or '-'}",
             f"  accepted {show_time(v.created_at)}; next attempt "
             f"{show_time(v.next_attempt_at)}; {v.attempts} attempt(s)"]
    if v.last_error:
        lines.append(f"  last error: {v.last_error}")
    lines += _routing_lines(v.routing)
    for a in v.history:
        when = show_time(a.time) if a.time else "-"
        lines.append(f"attempt {a.attempt} at {when} via {a.server or '-'} "
                     f"{a.host or ''}: {', '.join(s.value for s in a.statuses)}".rstrip())
        lines += [f"  {_line(e, 200)}" for e in a.errors]
    lines += [f"{act.status.value} by {act.actor or '?'} at "
              f"{show_time(act.time) if act.time else '-'}: {act.reason}" for act in v.actions]
    return "\n".join(lines)


def _routing_lines(r: Any) -> list[str]:
    if r is None:
        return ["routing: not routed yet (a worker routes it on its first attempt)"]
    rule = f" (rule {r.rule})" if r.rule else ""
    revision = f", config revision {r.config_revision}" if r.config_revision else ""
    lines = [f"routing: server {r.server or '-'} via {r.via or '-'}{rule}{revision}"]
    if r.reason:
        lines.append(f"  {r.reason}")
    for t in r.rules:
        note = f" ({t.note})" if t.note else ""
        lines.append(f"  rule {t.rule} (order {t.order}) -> {t.server}: {t.verdict}{note}")
        lines += [f"    failed: {c}" for c in t.failed]
    lines.append(f"  alternates: {', '.join(r.alternates) or 'none'}")
    return lines


def _action_options(action: Action) -> Callable[[F], F]:
    def wrap(f: F) -> F:
        f = click.argument("ids", nargs=-1, type=click.IntRange(min=1))(f)
        f = click.option("--server", metavar="NAME",
                         help="Every message routed through this server.")(f)
        f = click.option("--namespace", "-n", metavar="NS", help="Only this namespace.")(f)
        f = click.option("--reason", default="", required=action is Action.CANCEL,
                         metavar="TEXT", help="Recorded in the audit with the actor.")(f)
        f = click.option("--actor", metavar="NAME",
                         help="Who does this, for the audit (default: CI user, else OS "
                         "user).")(f)
        if action in WAITS_FOR_FLIGHT:
            f = click.option("--wait", type=click.FloatRange(min=0), default=30.0,
                             show_default=True, metavar="SECONDS",
                             help="How long to wait for a message being sent right now.")(f)
        return store_option(f)
    return wrap


def _run(action: Action, ids: tuple[int, ...], *, store_url: str | None, actor: str | None,
         reason: str, server: str | None, namespace: str | None, wait: float = 0.0,
         to_server: str | None = None, **wide: bool) -> None:
    from reconciler.plan.apply import resolve_actor

    who = resolve_actor(actor)
    try:
        where = selection(action, ids, server=server, namespace=namespace, **wide)
        with opened_store(store_url) as store:
            to = None
            if action is Action.REQUEUE and to_server is not None:
                from reconciler.runtime.live_config import LiveConfig

                to = requeue_target(store, LiveConfig.from_snapshot(store.snapshot()),
                                    where, to_server)
            result = perform(store, action, where, actor=who, reason=reason, to=to)
            if wait and any(s is OutboxState.LEASED for _, s in result.refused):
                result = _after_flight(store, action, where, result, wait, who, reason)
    except QueueError as exc:
        raise UserError(str(exc)) from None
    click.echo(done_text(action, result.changed, who))
    for i, state in result.refused:
        click.echo(refusal(action, i, state), err=True)
    if result.refused:
        finish(1)


def _after_flight(store: Store, action: Action, where: QueueFilter, first: ControlResult,
                  wait: float, who: str, reason: str) -> ControlResult:
    """Wait for the attempts in flight to end, then act on those messages once more:
    the action lands before their next attempt, or they were sent meanwhile."""
    flying = tuple(i for i, s in first.refused if s is OutboxState.LEASED)
    click.echo(f"waiting up to {wait:g}s for message(s) {', '.join(map(str, flying))} "
               "being sent right now", err=True)
    deadline = datetime.now(UTC) + timedelta(seconds=wait)
    while datetime.now(UTC) < deadline and any(
            (m := store.outbox.get(i)) is not None and m.state is OutboxState.LEASED
            for i in flying):
        time.sleep(0.2)
    again = perform(store, action, QueueFilter(ids=flying, namespace=where.namespace),
                    actor=who, reason=reason)
    return ControlResult(first.changed + again.changed,
                         tuple(r for r in first.refused if r[0] not in flying) + again.refused)


@command.command("retry")
@_action_options(Action.RETRY)
@click.option("--all-deferred", is_flag=True, help="Every message waiting for a retry.")
def retry(ids: tuple[int, ...], **kw: Any) -> None:
    """Make deferred (or queued) messages due now, like `postqueue -f`."""
    _run(Action.RETRY, ids, **kw)


@command.command("hold")
@_action_options(Action.HOLD)
def hold(ids: tuple[int, ...], **kw: Any) -> None:
    """Keep messages from being sent until released (survives daemon restarts)."""
    _run(Action.HOLD, ids, **kw)


@command.command("release")
@_action_options(Action.RELEASE)
@click.option("--all", "all_held", is_flag=True, help="Every held message.")
def release(ids: tuple[int, ...], **kw: Any) -> None:
    """Put held messages back in the queue, due when they were due before the hold."""
    _run(Action.RELEASE, ids, **kw)


@command.command("cancel")
@_action_options(Action.CANCEL)
def cancel(ids: tuple[int, ...], **kw: Any) -> None:
    """Cancel messages for good: never sent; audited SEND_CANCELLED with actor and reason."""
    _run(Action.CANCEL, ids, **kw)


@command.command("requeue")
@_action_options(Action.REQUEUE)
@click.option("--to-server", required=True, metavar="NAME",
              help="The server to send through (same namespace, existing and enabled).")
def requeue(ids: tuple[int, ...], **kw: Any) -> None:
    """Route deferred messages through another server of their namespace, due now."""
    _run(Action.REQUEUE, ids, **kw)
