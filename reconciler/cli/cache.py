"""`reconcile cache clear`: delete the plan cache (.reconcile/cache/)."""

from __future__ import annotations

import shutil

import click

from reconciler.policy.cache_pack import DEFAULT_FOLDER


@click.group("cache")
def command() -> None:
    """The cache that lets validate and plan re-check only what changed."""


@command.command("clear")
def clear() -> None:
    """Delete .reconcile/cache/ (the next validate or plan rebuilds it)."""
    existed = DEFAULT_FOLDER.exists()
    shutil.rmtree(DEFAULT_FOLDER, ignore_errors=True)
    click.echo(f"deleted {DEFAULT_FOLDER}/" if existed else f"no cache at {DEFAULT_FOLDER}/")
