"""`reconcile`: the command line. Each command group lives in its own module
of this package and exposes ``command`` (a click command or group); this file
only collects them."""

from __future__ import annotations

import importlib
import pkgutil
import sys

import click

import reconciler.cli as _pkg

_NOT_COMMANDS = {"main", "render", "common"}


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="reconciler", prog_name="reconcile")
def cli() -> None:
    """Mail-server settings as code: validate, plan, apply, history, dispatch."""


def _register() -> None:
    for info in sorted(pkgutil.iter_modules(_pkg.__path__), key=lambda i: i.name):
        if info.name in _NOT_COMMANDS or info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{_pkg.__name__}.{info.name}")
        command = getattr(module, "command", None)
        if isinstance(command, click.Command):
            cli.add_command(command)


_register()


def main() -> None:
    from reconciler.cli.common import run

    sys.exit(run(cli))
