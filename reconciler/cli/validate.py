"""`reconcile validate DIR`: check a config repo and report every problem at once."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from reconciler.cli.render import FORMATS, emit
from reconciler.policy.incremental import CachedValidation, validate_incremental
from reconciler.policy.validate import ValidationResult, validate_path

Result = ValidationResult | CachedValidation

no_cache_option = click.option(
    "--no-cache", is_flag=True,
    help="Validate every file from scratch and leave .reconcile/cache/ alone (the cache "
    "is used where .reconcile/ exists).")


def validated_path(path: Path, no_cache: bool) -> Result:
    """Validate ``path``, reusing the results of unchanged files unless ``no_cache``.

    The cache lives in the working folder's ``.reconcile/`` (made by the first
    apply into the default store, or by hand), like git's ``.git/``: validate and
    plan never create that folder themselves.
    """
    from reconciler.policy.cache_pack import DEFAULT_FOLDER
    if no_cache or not DEFAULT_FOLDER.parent.is_dir():
        return validate_path(path)
    return validate_incremental(path, DEFAULT_FOLDER)


@click.command("validate")
@click.argument("path", type=click.Path(path_type=Path), default=Path("."))
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="text", show_default=True)
@click.option("--show-derived", is_flag=True, help="Also list every value that was filled in "
              "and why.")
@click.option("--strict", is_flag=True, help="Treat warnings as errors (exit 1).")
@click.option("--github-prefix", default="", metavar="DIR/",
              help="Prefix for file paths in GitHub annotations (the config folder relative "
              "to the repository root).")
@no_cache_option
def command(path: Path, fmt: str, show_derived: bool, strict: bool, github_prefix: str,
            no_cache: bool) -> None:
    """Check the YAML resources below PATH: schema, references, semantics and policies.

    Exit 0 when valid, 1 on any error (with --strict, also on warnings).
    """
    result = validated_path(path, no_cache)
    # one JSON document on stdout: derived values go into the same object
    extra = {"derived": _derived_rows(result)} if show_derived and fmt == "json" else None
    emit(result.diagnostics, fmt, result.count, github_prefix=github_prefix,
         extra=extra)
    if show_derived and fmt != "json":
        _show_derived(result)
    failed = result.diagnostics.has_errors or (strict and result.diagnostics.warnings)
    raise click.exceptions.Exit(1 if failed else 0)


def _derived_rows(result: Result) -> list[dict[str, Any]]:
    return [
        {"resource": display, "file": file, "path": d.dotted, "value": d.value,
         "reason": d.reason}
        for display, file, derivations in result.derived_listing() for d in derivations
    ]


def _show_derived(result: Result) -> None:
    click.echo("\nderived values:")
    for display, file, derivations in result.derived_listing():
        if derivations:
            click.echo(f"  {display}  ({file})")
        for d in derivations:
            click.echo(f"    {d.dotted} = {json.dumps(d.value)}  # {d.reason}")
