"""`reconcile schema`: write or check the JSON Schemas generated from the models."""

from __future__ import annotations

from pathlib import Path

import click

from reconciler.policy.schema import stale, write_all


@click.command("schema")
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), default=Path("schemas"),
              show_default=True, help="Folder for the schema files.")
@click.option("--check", is_flag=True, help="Only report files that are out of date (exit 1).")
def command(out: Path, check: bool) -> None:
    """Generate one JSON Schema per kind plus the bundle reconciler.json."""
    if check:
        outdated = stale(out)
        for name in outdated:
            click.echo(f"{out / name}: out of date; run `reconcile schema --out {out}`")
        raise click.exceptions.Exit(1 if outdated else 0)
    written = write_all(out)
    click.echo(f"{len(written)} schema file(s) written to {out}" if written
               else f"schemas in {out} are up to date")
