"""`reconcile lock status` and `reconcile force-unlock LOCK_ID` (SPEC P3).

An apply holds the store's lock while it writes; a process killed mid-apply
leaves the lock behind, and nobody can apply until it is released. The lock
id shown by `lock status` (and in the "store is locked" error) is the
confirmation: force-unlock needs it, so an operator cannot release a lock
they have not looked at.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import click

from reconciler.cli.common import UserError, format_option, opened_store, show_time, store_option
from reconciler.state import LockInfo


def _describe(info: LockInfo) -> str:
    age = datetime.now(UTC) - info.acquired_at.astimezone(UTC)
    minutes = int(age.total_seconds() // 60)
    held = f"{minutes // 60} h {minutes % 60} min" if minutes >= 60 else f"{minutes} min"
    return (f"held by {info.holder} ({info.operation}) since {show_time(info.acquired_at)} "
            f"({held}), lock id {info.id}")


@click.group("lock")
def command() -> None:
    """The store's apply lock: who holds it, and releasing a stale one."""


@command.command("status")
@format_option()
@store_option
def status_command(fmt: str, store_url: str | None) -> None:
    """Show who holds the apply lock, if anyone."""
    with opened_store(store_url) as store:
        info = store.current_lock()
    if fmt == "json":
        click.echo(json.dumps({"locked": False} if info is None else {
            "locked": True, "id": info.id, "holder": info.holder, "operation": info.operation,
            "acquiredAt": info.acquired_at.isoformat(), "planDigest": info.plan_digest,
        }, indent=2))
    elif info is None:
        click.echo("unlocked: no apply is running")
    else:
        click.echo(f"locked: {_describe(info)}")
        if info.plan_digest:
            click.echo(f"  applying plan {info.plan_digest}")
        click.echo("If that process is gone (crashed, killed), release the lock with "
                   f"`reconcile force-unlock {info.id}`.")


@click.command("force-unlock")
@click.argument("lock_id")
@store_option
def force_unlock(lock_id: str, store_url: str | None) -> None:
    """Release the apply lock LOCK_ID left behind by a process that is gone.

    Only do this when the holder is really gone: two applies at once are
    still refused by the store, but the one that loses must re-plan.
    """
    with opened_store(store_url) as store:
        released = store.force_unlock(lock_id)
        current = None if released else store.current_lock()
    if released is None:
        state = (f"the lock is {_describe(current)}" if current is not None
                 else "the store is not locked")
        raise UserError(f"no lock with id {lock_id!r}: {state}; nothing was released")
    click.echo(f"released the lock {_describe(released)}")


command.add_command(force_unlock)
