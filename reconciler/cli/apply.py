"""`reconcile apply PLANFILE|DIR`: write a plan to the live store as one revision (SPEC P2, P3)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import click

from reconciler.cli.common import UserError, opened_store, show_time, store_option
from reconciler.cli.plan import (
    plan_against,
    stdout_is_terminal,
    validated,
)
from reconciler.credentials.moves import parse_approval
from reconciler.plan import render
from reconciler.plan.apply import (
    DEFAULT_MAX_CHANGE_RATIO,
    DEFAULT_MIN_GUARDED,
    apply_plan,
    planning_lock,
    resolve_actor,
)
from reconciler.plan.model import Plan, PlanFileError, load
from reconciler.state import Action, LockInfo, LockTimeout, Revision, RevisionMeta, Store

CONFIG_SUFFIXES = (".yaml", ".yml")
# Queued CI applies wait their turn: 20 started at once on a 2-core machine at load
# ~20 all finished within 75 s, so two minutes leaves room for a longer queue; the
# waiting line names the holder at once, so a stuck lock is not a silent wait.
DEFAULT_LOCK_TIMEOUT_S = 120.0


def stdin_is_terminal() -> bool:
    return sys.stdin.isatty()


def is_saved_plan(target: Path) -> bool:
    # A config repo may be a single YAML file; anything else that is a file is a plan.
    return target.is_file() and target.suffix.lower() not in CONFIG_SUFFIXES


def _load(target: Path) -> Plan:
    try:
        return load(target)
    except PlanFileError as exc:
        raise UserError(str(exc)) from None


def _confirm(store: Store, yes: bool) -> None:
    if yes:
        return
    if not stdin_is_terminal():
        raise UserError(
            "not applying: confirmation is needed and stdin is not a terminal. Review the plan "
            "above and re-run with --yes, or save it with `reconcile plan DIR --out FILE` and "
            "apply that file."
        )
    click.confirm(f"Apply these changes to {store.location}?", abort=True)


def _applied(rev: Revision) -> str:
    counts = {a: sum(1 for c in rev.changes if c.action is a) for a in Action}
    return (f"Applied revision {rev.number}: {counts[Action.CREATE]} created, "
            f"{counts[Action.UPDATE]} updated, {counts[Action.DELETE]} deleted.")


@click.command("apply")
@click.argument("target", type=click.Path(exists=True, path_type=Path), metavar="PLANFILE|DIR")
@store_option
@click.option("--yes", "-y", is_flag=True, help="Apply a DIR's plan without asking.")
@click.option("--actor", metavar="NAME", help="Who applies, for the history (default: the CI "
              "user, then the OS user).")
@click.option("--message", "-m", default="", help="Why, for the history.")
@click.option("--lock-timeout", type=click.FloatRange(min=0), default=DEFAULT_LOCK_TIMEOUT_S,
              show_default=True, metavar="SECONDS",
              help="How long to wait for another apply to finish.")
@click.option("--force", is_flag=True, help="Apply even when the plan updates or deletes more "
              f"than {DEFAULT_MAX_CHANGE_RATIO:.0%} of the live resources (guarded from "
              f"{DEFAULT_MIN_GUARDED} live resources on).")
@click.option("--prune", is_flag=True, help="With a DIR: also delete live resources that are "
              "not in the configuration.")
@click.option("--approve-credential-move", "approvals", multiple=True,
              metavar="KIND/NAME|all", help="Allow the credential moves of this resource "
              "(KIND/NAME or KIND/NAMESPACE/NAME, as the plan lists them; repeatable), or "
              "all of them: its credentials may then be sent to endpoints no apply bound "
              "them to. Recorded in the history with --actor as the approver.")
def command(target: Path, store_url: str, yes: bool, actor: str | None, message: str,
            lock_timeout: float, force: bool, prune: bool, approvals: tuple[str, ...]) -> None:
    """Apply a saved plan, or plan DIR and apply it after confirmation.

    A saved plan is applied exactly as shown, and only if the live store is
    still at the revision it was planned against. Everything is written in
    one transaction, under the store's lock, as one new revision.
    """
    _check_approvals(approvals)
    saved = is_saved_plan(target)
    if saved and prune:
        raise UserError(
            "--prune only applies when planning; a saved plan already contains its deletions. "
            "Re-create it with `reconcile plan DIR --prune --out FILE`."
        )
    colour = stdout_is_terminal()
    # The plan file or the config is checked before the store is opened (or created).
    loaded = _load(target) if saved else None
    result = validated(target, "text") if loaded is None else None
    with opened_store(store_url, create=True) as store:
        if loaded is not None or not yes:
            # What a person confirms (or saved) is what gets applied: planned before the
            # lock, so nobody holds it while reading, and refused as stale if the store
            # moved meanwhile.
            plan = loaded or plan_against(target, result, store, prune=prune)
            _apply(store, plan, saved=saved, yes=yes, actor=actor, message=message,
                   lock_timeout=lock_timeout, force=force, colour=colour, approvals=approvals)
            return
        # --yes: planned under the lock, against the head of that moment, so concurrent
        # applies of a folder queue and each one sees what the previous one wrote.
        with _waiting(lock_timeout), planning_lock(
                store, resolve_actor(actor), timeout=lock_timeout,
                on_wait=_tell_waiting(lock_timeout)):
            plan = plan_against(target, result, store, prune=prune)
            _apply(store, plan, saved=saved, yes=yes, actor=actor, message=message,
                   lock_timeout=lock_timeout, force=force, colour=colour, lock_held=True,
                   approvals=approvals)


def _check_approvals(approvals: tuple[str, ...]) -> None:
    for given in approvals:
        try:
            parse_approval(given)
        except ValueError as exc:
            raise UserError(str(exc)) from None


def _apply(store: Store, plan: Plan, *, saved: bool, yes: bool, actor: str | None,
           message: str, lock_timeout: float, force: bool, colour: bool,
           approvals: tuple[str, ...] = (), lock_held: bool = False) -> None:
    click.echo(render.text(plan, colour=colour))
    if not plan.has_changes:
        click.echo("Nothing to apply; no revision was written.")
        return
    if not saved:
        _confirm(store, yes)
    meta = RevisionMeta(actor=resolve_actor(actor), message=message)
    with _waiting(lock_timeout):
        rev = apply_plan(store, plan, meta, lock_timeout=lock_timeout, force=force,
                         lock_held=lock_held, on_wait=_tell_waiting(lock_timeout),
                         approvals=approvals)
    click.echo(_applied(rev))


@contextmanager
def _waiting(lock_timeout: float) -> Iterator[None]:
    """A lock not had within ``--lock-timeout`` is one message naming its holder."""
    try:
        yield
    except LockTimeout as exc:
        raise UserError(
            f"{exc}. Waited {lock_timeout:g} s (--lock-timeout); nothing was applied. "
            "Try again when it is released."
        ) from None


def _tell_waiting(lock_timeout: float) -> Callable[[LockInfo], None]:
    """Say on stderr whom an apply waits for, so a queued apply is not a silent hang."""
    def tell(holder: LockInfo) -> None:
        click.echo(
            f"waiting for the apply lock held by {holder.holder} ({holder.operation}) since "
            f"{show_time(holder.acquired_at)}, up to {lock_timeout:g} s (--lock-timeout)",
            err=True,
        )
    return tell
