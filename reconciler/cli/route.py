"""`reconcile route`: which server would send a notification, and why (SPEC O2).

Reads the live store (what the daemon runs) or, with ``--config DIR``, a
config repo validated in memory (what a pull request would change), and
prints the routing decision with every rule and condition tried. Exit 0 when
the notification would go out through a server that can send; 1 when it
would not be sent (no server, or the chosen server's config is not proper,
O8) or on errors.
"""

from __future__ import annotations

from pathlib import Path

import click

from reconciler.cli.common import UserError, finish, opened_store, store_option
from reconciler.cli.render import emit
from reconciler.cli.send import context_option, parse_context
from reconciler.config.models.outgoing_server import OutgoingServer
from reconciler.dispatch.readiness import server_problems
from reconciler.runtime.fallback import Reachability, primary_fallback
from reconciler.runtime.namespace import NamespaceConfig


@click.command("route")
@click.option("--namespace", default="default", show_default=True, metavar="NS")
@click.option("--module", required=True, metavar="MODULE",
              help="request, problem, change, task, ...")
@context_option
@store_option
@click.option("--config", "config_dir", metavar="DIR", type=click.Path(exists=True, path_type=Path),
              help="Route with this config repo (validated, not applied) instead of the "
              "live store.")
@click.pass_context
def command(ctx: click.Context, namespace: str, module: str, fields: tuple[str, ...],
            store_url: str | None, config_dir: Path | None) -> None:
    """Explain which outgoing server a notification would be sent through."""
    context = parse_context(fields)
    health = Reachability()  # a config repo has no health: never down
    if config_dir is None:
        source, ns = _from_store(store_url, namespace, health)
    elif ctx.get_parameter_source("store_url") is click.core.ParameterSource.COMMANDLINE:
        raise UserError("give either --store or --config, not both")
    else:
        source, ns = _from_config(config_dir, namespace)
    if ns is None:
        raise UserError(f"namespace {namespace!r} has no configuration in {source}")
    decision = ns.route(module, context)
    click.echo(f"{source}, namespace {namespace}")
    click.echo(decision.explain())
    if decision.server is None:
        click.echo("not sent: SEND_FAILED (no server)")
        finish(1)
    server = decision.server
    fallback = primary_fallback(ns, server, health)
    if fallback is not None:
        click.echo(f"=> {fallback.reason} (O15, MailSettings.primaryFallbackAfterSeconds)")
        server = fallback.primary
    if not _can_send(ns, server):
        finish(1)


def _from_store(store_url: str | None, namespace: str,
                health: Reachability) -> tuple[str, NamespaceConfig | None]:
    from reconciler.health.monitor import all_down
    from reconciler.health.record import read
    from reconciler.runtime.live_config import LiveConfig

    with opened_store(store_url) as store:
        live = store.snapshot()
        where = f"live store {store.location} at revision {live.revision}"
        # The health monitor's records, as the daemon's worker sees them.
        records = {key: read(status) for key, status in store.statuses().items()
                   if key.namespace == namespace}
    health.replace({(k.namespace, k.name): r.last_change for k, r in records.items()
                    if r is not None and all_down(r)})
    return where, LiveConfig.from_snapshot(live).namespaces.get(namespace)


def _from_config(config_dir: Path, namespace: str) -> tuple[str, NamespaceConfig | None]:
    from reconciler.policy.validate import validate_path

    result = validate_path(config_dir)
    if not result.ok:
        emit(result.diagnostics, "text", len(result.resources))
        raise UserError(f"{config_dir} is not valid; fix the errors above to route with it")
    models = [r.model for r in result.resources if r.model.metadata.namespace == namespace]
    where = f"config {config_dir} (validated, not applied)"
    return where, NamespaceConfig.from_resources(namespace, models) if models else None


def _can_send(ns: NamespaceConfig, server: OutgoingServer) -> bool:
    """Print what would stop the chosen server from sending; True when nothing would."""
    problems = [f"{p.reason.value} ({p.detail})" for p in server_problems(server)]
    try:
        recipient_filter = ns.recipient_filter(server)
    except LookupError as exc:
        problems.append(str(exc))
        recipient_filter = None
    if recipient_filter is not None:
        name = recipient_filter.metadata.name
        default = ns.settings is not None and ns.settings.spec.recipient_filter == name
        click.echo(f"recipients are filtered by {recipient_filter.spec.type} list {name}"
                   + (" (the namespace default, MailSettings.recipientFilter)" if default
                      else ""))
    for problem in problems:
        click.echo(f"not sent: SEND_FAILED: {problem}")
    return not problems
