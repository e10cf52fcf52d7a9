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


def _escape(value: str, *, prop: bool = False) -> str:
    value = value.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    # property values also escape ':' and ',', which separate the properties
    return value.replace(":", "%3A").replace(",", "%2C") if prop else value


def diagnostic_github(d: Diagnostic, prefix: str = "") -> str:
    """A workflow command: ``::error file=F,line=L,col=C,title=T::message``."""
    props = []
    if d.file:
        props.append(f"file={_escape(prefix + d.file, prop=True)}")
    if d.line:
        props += [f"line={d.line}", f"col={d.col}"]
    props.append(f"title={_escape(d.code, prop=True)}")
    text = f"{d.path}: {d.message}" if d.path else d.message
    if d.hint:
        text += f" (hint: {d.hint})"
    return f"::{d.severity} {','.join(props)}::{_escape(text)}"


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
    colour = sys.stdout.isatty()  # click.get_text_stream is deprecated (removed in Click 9)
    for d in items:
        click.echo(diagnostic_github(d, github_prefix) if fmt == "github"
                   else diagnostic_text(d, colour))
    click.echo(summary(items, resources))
