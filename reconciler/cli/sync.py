"""`reconcile sync status|now|suspend|resume` (SPEC X5), and the daemon's sync options.

The commands work on the store, like every other command: the syncing daemon reads
the same ``store.sync`` row, so they reach it wherever it runs.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import click

from reconciler.cli.common import UserError, opened_store, record_event, show_time, store_option
from reconciler.plan.apply import resolve_actor
from reconciler.state import RevisionKind
from reconciler.state.contract import SyncPhase, SyncRecord


def sync_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The daemon's operator-only sync settings (never in the config repository)."""
    options = [
        click.option("--sync-repo", metavar="URL|PATH", help="Follow this git repository "
                     "(SPEC X5): apply its commits per the SyncPolicy in it."),
        click.option("--sync-branch", default="main", show_default=True),
        click.option("--sync-path", default=".", show_default=True, metavar="FOLDER",
                     help="The config folder inside the repository."),
        click.option("--sync-interval", type=click.FloatRange(min=0.1), default=60.0,
                     show_default=True, metavar="SECONDS", help="How often git is polled."),
        click.option("--sync-token-ref", metavar="REF",
                     help="Secret reference of an HTTPS token with read access."),
        click.option("--sync-ssh-key-ref", metavar="REF",
                     help="Secret reference of an SSH private key."),
        click.option("--sync-webhook-secret-ref", metavar="REF", help="Secret reference of "
                     "the GitHub push webhook's secret (POST /v1/sync/webhook)."),
        click.option("--sync-cache-dir", default=".reconcile/sync", show_default=True,
                     metavar="DIR", help="Where fetched commits are kept."),
        click.option("--sync-status-repo", metavar="OWNER/NAME",
                     help="Post each sync's outcome as a GitHub commit status there."),
        click.option("--sync-status-token-ref", metavar="REF",
                     help="Secret reference of the token for commit statuses."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def sync_settings(given: dict[str, Any]) -> dict[str, Any]:
    """The DaemonSettings fields of :func:`sync_options`' values."""
    fields = {k: v for k, v in given.items() if v is not None}
    if "sync_interval" in fields:
        fields["sync_interval_seconds"] = fields.pop("sync_interval")
    return fields


@click.group("sync")
def command() -> None:
    """The daemon's continuous sync from git: state, sync now, suspend, resume."""


@command.command("status")
@store_option
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text",
              show_default=True)
def status(store_url: str, fmt: str) -> None:
    """Source, last fetched and applied commit, state with reason and next attempt."""
    with opened_store(store_url) as store:
        rec = store.sync.get()
    if fmt == "json":
        click.echo(json.dumps(rec.to_json(), indent=2))
        return
    for label, value in _lines(rec):
        if value:
            click.echo(f"{label + ':':<15} {value}")


def _lines(rec: SyncRecord) -> list[tuple[str, str | None]]:
    def when(d: datetime | None) -> str | None:
        return show_time(d) if d is not None else None

    return [("Source", rec.source or "(no sync has run)"), ("State", rec.phase.value),
            ("Reason", rec.reason.replace("\n", "\n" + " " * 16)),
            ("Last fetched", rec.last_fetched), ("Last applied", rec.last_applied),
            ("Degraded", rec.degraded_commit), ("Next attempt", when(rec.next_attempt_at)),
            ("Suspended by", rec.suspended_by), ("Updated", when(rec.updated_at))]


@command.command("now")
@store_option
@click.option("--override-window", is_flag=True,
              help="Apply even while a sync window holds automatic applies.")
def now(store_url: str, override_window: bool) -> None:
    """Ask the syncing daemon to sync at once (it looks every second)."""
    with opened_store(store_url) as store:
        store.sync.update(requested_at=datetime.now(UTC), override_window=override_window)
    click.echo("Sync requested; `reconcile sync status` shows the outcome.")


@command.command("suspend")
@store_option
@click.option("--actor", metavar="NAME", help="Who suspends, for the history.")
@click.option("--message", "-m", default="", help="Why, for the history.")
def suspend(store_url: str, actor: str | None, message: str) -> None:
    """Stop automatic syncs (recorded in the history) until `reconcile sync resume`."""
    who = resolve_actor(actor)
    with opened_store(store_url) as store:
        number = record_event(store, who, f"sync suspended{': ' + message if message else ''}",
                              RevisionKind.SYNC)
        store.sync.update(phase=SyncPhase.SUSPENDED, suspended_by=who,
                          reason=message or f"suspended by {who}")
    click.echo(f"Sync suspended (revision {number}).")


@command.command("resume")
@store_option
@click.option("--actor", metavar="NAME", help="Who resumes, for the history.")
def resume(store_url: str, actor: str | None) -> None:
    """Resume automatic syncs; the next one runs at once."""
    who = resolve_actor(actor)
    with opened_store(store_url) as store:
        if store.sync.get().phase is not SyncPhase.SUSPENDED:
            raise UserError("the sync is not suspended; nothing to resume")
        number = record_event(store, who, "sync resumed", RevisionKind.SYNC)
        store.sync.update(phase=SyncPhase.OUT_OF_SYNC, suspended_by=None,
                          reason=f"resumed by {who}", requested_at=datetime.now(UTC))
    click.echo(f"Sync resumed (revision {number}).")

