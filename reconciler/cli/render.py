"""Rendering diagnostics for people (text), machines (JSON) and GitHub Actions."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable

import click

from reconciler.config.diagnostics import Diagnostic, Severity

COLOURS = {Severity.ERROR: "red", Severity.WARNING: "yellow", Severity.NOTICE: "cyan"}
FORMATS = ("text", "json", "github")


def diagnostic_text(d: Diagnostic, colour: bool = False) -> str:
    label = click.style(str(d.severity), fg=COLOURS[d.severity], bold=True) if colour \
        else str(d.severity)
    path = f"  {d.path}" if d.path else ""
    line = f"{d.location}{path}  {label}: {d.message}"
    if d.hint:
        line += f"\n    hint: {d.hint}"
    return line


def _escape_property(value: str) -> str:
    return (value.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
            .replace(":", "%3A").replace(",", "%2C"))


def _escape_data(value: str) -> str:
    return value.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def diagnostic_github(d: Diagnostic, prefix: str = "") -> str:
    """A workflow command: ``::error file=F,line=L,col=C,title=T::message``."""
    level = {Severity.ERROR: "error", Severity.WARNING: "warning", Severity.NOTICE: "notice"}[
        d.severity]
    props = []
    if d.file:
        props.append(f"file={_escape_property(prefix + d.file)}")
    if d.line:
        props.append(f"line={d.line}")
        props.append(f"col={d.col}")
    props.append(f"title={_escape_property(d.code)}")
    text = f"{d.path}: {d.message}" if d.path else d.message
    if d.hint:
        text += f" (hint: {d.hint})"
    return f"::{level} {','.join(props)}::{_escape_data(text)}"


def summary(diagnostics: Iterable[Diagnostic], resources: int) -> str:
    items = list(diagnostics)
    errors = sum(d.severity is Severity.ERROR for d in items)
    warnings = sum(d.severity is Severity.WARNING for d in items)
    status = "invalid" if errors else "valid"
    return (f"{status}: {errors} error{'s' * (errors != 1)}, "
            f"{warnings} warning{'s' * (warnings != 1)}, {resources} resource"
            f"{'s' * (resources != 1)}")


def emit(diagnostics: Iterable[Diagnostic], fmt: str, resources: int, *,
         github_prefix: str = "", extra: dict[str, object] | None = None) -> None:
    """Print the diagnostics; ``extra`` adds keys to the one JSON object (json format)."""
    items = list(diagnostics)
    if fmt == "json":
        click.echo(json.dumps({
            "valid": not any(d.severity is Severity.ERROR for d in items),
            "resources": resources,
            "diagnostics": [d.as_dict() for d in items],
            **(extra or {}),
        }, indent=2))
        return
    if fmt == "github":
        for d in items:
            click.echo(diagnostic_github(d, github_prefix))
        click.echo(summary(items, resources))
        return
    colour = sys.stdout.isatty()  # click.get_text_stream is deprecated (removed in Click 9)
    for d in items:
        click.echo(diagnostic_text(d, colour))
    click.echo(summary(items, resources), err=False)
