"""``reconcile daemon``'s console options (SPEC X6, docs/console.md)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import click
from click.core import ParameterSource

from reconciler.cli.common import UserError

_ROLES = "sender, viewer, auditor, operator, admin"


def console_options(command: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option("--console/--no-console", "console", default=False, show_default=True,
                     help="Serve the web console under /console (sign in with an API token "
                     "or OpenID Connect)."),
        click.option("--console-session-key-ref", metavar="REF", help="Secret reference of "
                     "the key signing console sessions; without it the key is random per "
                     "start and every session ends when the daemon restarts."),
        click.option("--console-session-hours", type=click.FloatRange(min=0.01),
                     default=8.0, show_default=True, help="How long a console session lasts."),
        click.option("--console-public-url", metavar="URL", help="How browsers reach this "
                     "daemon (behind a proxy), for the OpenID Connect redirect URI."),
        click.option("--console-oidc-issuer", metavar="URL",
                     help="OpenID Connect provider (its discovery document is under it)."),
        click.option("--console-oidc-client-id", metavar="ID"),
        click.option("--console-oidc-client-secret-ref", metavar="REF",
                     help="Secret reference of the client secret (none: a public client)."),
        click.option("--console-oidc-scope", "console_oidc_scopes", multiple=True,
                     metavar="SCOPE", help="Scopes asked for [default: openid email profile]."),
        click.option("--console-oidc-name-claim", default="email", show_default=True,
                     help="The claim shown as the user's name and written into the audit."),
        click.option("--console-oidc-roles-claim", default="groups", show_default=True,
                     help="The claim whose values --console-oidc-role maps to roles."),
        click.option("--console-oidc-namespaces-claim", metavar="CLAIM", help="The claim "
                     "listing the namespaces a user sees (* for all); default: all."),
        click.option("--console-oidc-role", "console_oidc_role_map", multiple=True,
                     metavar="VALUE=ROLE", help=f"Map a roles-claim value to a role ({_ROLES});"
                     " repeatable, e.g. desk-ops=operator."),
        click.option("--console-oidc-label", default="your identity provider",
                     show_default=True, help="The provider's name on the sign-in button."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def console_settings(given: dict[str, Any],
                     from_file: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The DaemonSettings fields of :func:`console_options`, taken out of ``given``;
    ``from_file`` (the access file's ``console:`` / ``oidc:``) fills each option left
    at its default: an option on the command line (or its environment) wins."""
    from reconciler.console.oidc import parse_role_map

    fields = {k: given.pop(k) for k in [k for k in given if k.startswith("console")]}
    context = click.get_current_context(silent=True)
    for name, value in (from_file or {}).items():
        source = context.get_parameter_source(name) if context is not None else None
        if source in (None, ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP):
            fields[name] = value
    try:
        parse_role_map(fields.get("console_oidc_role_map", ()))
    except ValueError as exc:
        raise UserError(f"--console-oidc-role: {exc}") from None
    fields = {k: tuple(v) if isinstance(v, list | tuple) else v for k, v in fields.items()
              if v is not None and v != ()}
    return fields
