"""`reconcile`: the command line.

Each command (group) lives in its own module of this package; the table
below maps command names to ``module:attribute`` and a module is imported
only when its command runs. That keeps `reconcile validate` from paying for
SQLAlchemy, Alembic and deepdiff (about half a second per process).
"""

from __future__ import annotations

import gc
import importlib
import sys

import click

# Each command is `command` in the module of its name, except force-unlock.
COMMANDS: dict[str, str] = {
    name: f"{name.replace('-', '_')}:command"
    for name in ("validate", "auth", "schema", "convert", "secret", "plan", "apply", "history",
                 "drift", "live", "lock", "audit", "daemon", "send", "route", "status",
                 "test-connection", "incoming", "sync", "outbox")
} | {"force-unlock": "lock:force_unlock"}
COMMANDS["cache"] = "cache:command"
# Commands that read a whole config repo once and exit (see main)
ONE_PASS = frozenset({"validate", "plan", "apply"})


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        module = importlib.import_module(f"{__package__}.{module_name}")
        command = getattr(module, attr)
        assert isinstance(command, click.Command), target
        return command


@click.group(cls=LazyGroup,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="reconciler", prog_name="reconcile")
def cli() -> None:
    """Mail-server settings as code: validate, plan, apply, history, dispatch."""


def main() -> None:
    if sys.argv[1:2] and sys.argv[1] in ONE_PASS:
        # One pass over a config repo, then exit: nearly every object lives to the end,
        # so the cyclic collector would only rescan them -- imports, the store snapshot
        # and plan building around the already paused validation (config.gcpause) cost
        # ~30 % of a cold 10,000-resource `plan` in collections (bench/plan_scale.py).
        # Reference counting still frees all other garbage at once.
        gc.disable()
    from reconciler.cli.common import run

    sys.exit(run(cli))
