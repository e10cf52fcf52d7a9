"""`reconcile plan DIR`: what apply would change in the live store (SPEC P1, P2).

Exit codes follow ``terraform plan -detailed-exitcode``: 0 no changes,
2 changes, 1 error, so CI can branch on them.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import click

from reconciler.cli.common import UsageExitsOne, UserError, finish, opened_store, store_option
from reconciler.cli.render import diagnostic_text, emit
from reconciler.cli.scope import scope_from, scope_options, warn
from reconciler.cli.validate import Result, no_cache_option, validated_path
from reconciler.config.diagnostics import Severity
from reconciler.plan import render
from reconciler.plan.folder import plan_against
from reconciler.plan.model import PlanFileError, save

EXIT_NO_CHANGES = 0
EXIT_ERROR = 1
EXIT_CHANGES = 2


def validated(path: Path, fmt: str, *, no_cache: bool = True) -> Result:
    """Validate like `reconcile validate`; exit 1 on errors.

    With markdown or JSON output stdout must stay one document, so the
    diagnostics of a valid config go to stderr there.
    """
    result = validated_path(path, no_cache)
    diags, count = result.diagnostics, result.count
    if fmt == "text" or (fmt == "json" and not result.ok):
        emit(diags, fmt, count)
    else:
        if not result.ok:  # markdown: the PR comment says why there is no plan
            click.echo(render.markdown_invalid(
                [diagnostic_text(d) for d in diags if d.severity is Severity.ERROR]))
        if list(diags):
            with contextlib.redirect_stdout(sys.stderr):
                emit(diags, "text", count)
    if not result.ok or result.desired is None:
        finish(EXIT_ERROR)
    return result


@click.command("plan", cls=UsageExitsOne)
@click.argument("path", type=click.Path(exists=True, path_type=Path), default=Path("."))
@store_option
@click.option("--format", "fmt", type=click.Choice(render.FORMATS), default="text",
              show_default=True, help="text for people, markdown for a PR comment, json for "
              "machines.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
              help="Save the plan; `reconcile apply FILE` then applies exactly it.")
@click.option("--prune", is_flag=True, help="Delete live resources that are not in the "
              "configuration (without it they are listed and kept).")
@click.option("--show-derived", is_flag=True, help="Also show the default and derived values "
              "of new resources (without it they are counted; changed ones are always shown).")
@no_cache_option
@scope_options
def command(path: Path, store_url: str, fmt: str, out: Path | None, prune: bool,
            show_derived: bool, no_cache: bool, targets: tuple[str, ...],
            namespaces: tuple[str, ...]) -> None:
    """Show what `reconcile apply` would create, update and delete.

    Compares the resources below PATH with the live store (only those named by
    --target/--namespace when given). Secret references
    are shown redacted; values that were filled in by default are marked
    (derived), and for new resources shown only with --show-derived. Exit 0
    when there are no changes, 2 when there are, 1 on error.
    """
    scope = scope_from(targets, namespaces)
    # Validate before opening the store: config errors come first, store or not.
    result = validated(path, fmt, no_cache=no_cache)
    with opened_store(store_url) as store:
        plan = plan_against(path, result, store, prune=prune, scope=scope)
    warn(plan)
    click.echo(render.render(plan, fmt, colour=sys.stdout.isatty(), show_derived=show_derived))
    if out is not None:
        try:
            save(plan, out)
        except (OSError, PlanFileError) as exc:
            raise UserError(f"cannot save the plan to {out}: {exc}") from None
        click.echo(f"Saved the plan to {out}; apply exactly it with `reconcile apply {out}`.",
                   err=True)
    finish(EXIT_CHANGES if plan.has_changes else EXIT_NO_CHANGES)
