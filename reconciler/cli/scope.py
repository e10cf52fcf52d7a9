"""`--target` and `--namespace` of `plan` and `apply`: plan and apply in part."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from reconciler.cli.common import UserError, parse_key
from reconciler.plan.model import Plan
from reconciler.plan.scope import Scope


def scope_options(f: Callable[..., Any]) -> Callable[..., Any]:
    f = click.option("--namespace", "-n", "namespaces", multiple=True, metavar="NS",
                     help="Plan only this namespace (repeatable); with --target, the "
                     "namespace of its KIND/NAME.")(f)
    return click.option("--target", "targets", multiple=True, metavar="KIND/NS/NAME",
                        help="Plan only this resource (repeatable; KIND/NAME with "
                        "--namespace). The rest of the configuration is not planned, but "
                        "still validated against the policies.")(f)


def scope_from(targets: tuple[str, ...], namespaces: tuple[str, ...]) -> Scope | None:
    """The scope the options name; None plans everything."""
    if not targets:
        return Scope(namespaces=tuple(dict.fromkeys(namespaces))) if namespaces else None
    if len(namespaces) > 1:
        raise UserError("with --target, give at most one --namespace (the namespace of the "
                        "KIND/NAME targets); name others as KIND/NAMESPACE/NAME")
    namespace = namespaces[0] if namespaces else None
    return Scope(targets=tuple(dict.fromkeys(parse_key(t, namespace) for t in targets)))


def warn(plan: Plan) -> None:
    if plan.scope is not None:
        click.echo(f"Warning: {plan.scope.warning()}.", err=True)
