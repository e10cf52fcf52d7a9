"""`reconcile apply PLANFILE|DIR`: write a plan to the live store as one revision (SPEC P2, P3)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import click

from reconciler.cli.common import UserError, action_counts, opened_store, show_time, store_option
from reconciler.cli.plan import validated
from reconciler.cli.scope import scope_from, scope_options, warn
from reconciler.credentials.moves import parse_approval
from reconciler.plan import render
from reconciler.plan.apply import (
    DEFAULT_MAX_CHANGE_RATIO,
    DEFAULT_MIN_GUARDED,
    apply_plan,
    resolve_actor,
)
from reconciler.plan.folder import apply_folder, plan_against
from reconciler.plan.model import Plan, PlanFileError, load
from reconciler.policy.validate import ValidationResult
from reconciler.state import Action, LockInfo, LockTimeout, RevisionMeta, Store

CONFIG_SUFFIXES = (".yaml", ".yml")
# Queued CI applies wait their turn: 20 started at once on a 2-core machine at load
# ~20 all finished within 75 s, so two minutes leaves room for a longer queue; the
# waiting line names the holder at once, so a stuck lock is not a silent wait.
DEFAULT_LOCK_TIMEOUT_S = 120.0


def stdin_is_terminal() -> bool:
    return sys.stdin.isatty()


def _confirm(store: Store) -> None:
    if not stdin_is_terminal():
        raise UserError(
            "not applying: confirmation is needed and stdin is not a terminal. Review the plan "
            "above and re-run with --yes, or save it with `reconcile plan DIR --out FILE` and "
            "apply that file."
        )
    click.confirm(f"Apply these changes to {store.location}?", abort=True)


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
@scope_options
def command(target: Path, store_url: str, yes: bool, actor: str | None, message: str,
            lock_timeout: float, force: bool, prune: bool, approvals: tuple[str, ...],
            targets: tuple[str, ...], namespaces: tuple[str, ...]) -> None:
    """Apply a saved plan, or plan DIR and apply it after confirmation.

    A saved plan is applied exactly as shown, and only if the live store is
    still at the revision it was planned against. Everything is written in
    one transaction, under the store's lock, as one new revision.
    """
    for given in approvals:
        try:
            parse_approval(given)
        except ValueError as exc:
            raise UserError(str(exc)) from None
    # A config repo may be a single YAML file; anything else that is a file is a plan.
    saved = target.is_file() and target.suffix.lower() not in CONFIG_SUFFIXES
    if saved and prune:
        raise UserError(
            "--prune only applies when planning; a saved plan already contains its deletions. "
            "Re-create it with `reconcile plan DIR --prune --out FILE`."
        )
    if saved and (targets or namespaces):
        raise UserError(
            "--target and --namespace only apply when planning; a saved plan keeps the scope "
            "it was made with. Re-create it with `reconcile plan DIR --target ... --out FILE`."
        )
    scope = scope_from(targets, namespaces)
    who = resolve_actor(actor)
    # The plan file or the config is checked before the store is opened (or created).
    try:
        loaded = load(target) if saved else None
    except PlanFileError as exc:
        raise UserError(str(exc)) from None
    result = validated(target, "text") if loaded is None else None
    # With --yes a DIR is planned under the lock, against the head of that moment, so
    # concurrent applies of a folder queue and each one sees what the previous one wrote.
    # Otherwise what a person confirms (or saved) is what gets applied: planned before the
    # lock, so nobody holds it while reading, and refused as stale if the store moved.
    under_lock = loaded is None and yes
    meta = RevisionMeta(actor=who, message=message)
    with opened_store(store_url, create=True) as store, _lock_wait(lock_timeout) as on_wait:
        if under_lock:
            _, rev = apply_folder(store, target, _valid(result), meta, prune=prune,
                                  lock_timeout=lock_timeout, force=force, approvals=approvals,
                                  on_wait=on_wait, show=_show, scope=scope)
        else:
            plan = loaded or plan_against(target, _valid(result), store, prune=prune,
                                          scope=scope)
            if saved:  # reviewed when it was made: one line says which plan this is
                scoped = f" (scope: {plan.scope.describe()})" if plan.scope else ""
                click.echo(f"Applying the saved plan {target}{scoped}: {render.summary(plan)}")
                warn(plan)
            else:
                _show(plan)
            rev = None
            if plan.has_changes:
                if not saved:
                    _confirm(store)
                rev = apply_plan(store, plan, meta, lock_timeout=lock_timeout, force=force,
                                 on_wait=on_wait, approvals=approvals)
    if rev is None:
        click.echo("Nothing to apply; no revision was written.")
        return
    counts = action_counts(rev)
    click.echo(f"Applied revision {rev.number}: {counts[Action.CREATE]} created, "
               f"{counts[Action.UPDATE]} updated, {counts[Action.DELETE]} deleted.")


def _show(plan: Plan) -> None:
    click.echo(render.text(plan, colour=sys.stdout.isatty()))
    warn(plan)


def _valid(result: ValidationResult | None) -> ValidationResult:
    assert result is not None  # validated() exits on errors
    return result


@contextmanager
def _lock_wait(lock_timeout: float) -> Iterator[Callable[[LockInfo], None]]:
    """Yield the ``on_wait`` that says on stderr whom an apply waits for, so a queued
    apply is not a silent hang; a lock not had in time is one message naming its holder."""
    def tell(holder: LockInfo) -> None:
        click.echo(
            f"waiting for the apply lock held by {holder.holder} ({holder.operation}) since "
            f"{show_time(holder.acquired_at)}, up to {lock_timeout:g} s (--lock-timeout)",
            err=True,
        )

    try:
        yield tell
    except LockTimeout as exc:
        raise UserError(
            f"{exc}. Waited {lock_timeout:g} s (--lock-timeout); nothing was applied. "
            "Try again when it is released."
        ) from None
