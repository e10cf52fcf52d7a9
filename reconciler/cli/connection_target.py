"""What `reconcile test-connection` tests: the one OutgoingServer or IncomingServer called
NAME, from the live store or a config repo, with the ProxyServers beside it."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
from pydantic import ValidationError

from reconciler.cli.common import UserError, opened_store
from reconciler.config.models.incoming_server import IncomingServer
from reconciler.config.models.outgoing_server import OutgoingServer
from reconciler.config.models.proxy_server import ProxyServerSpec

KINDS = ("OutgoingServer", "IncomingServer")
Server = OutgoingServer | IncomingServer


@dataclass(frozen=True)
class Target:
    server: Server
    proxies: dict[tuple[str, str], ProxyServerSpec]

    @property
    def kind(self) -> str:
        return self.server.kind

    def proxy_lookup(self) -> Callable[[Any], ProxyServerSpec | None]:
        """The ProxyServer a server names, in its namespace (the daemon's rule)."""
        return lambda s: self.proxies.get((s.metadata.namespace, s.spec.proxy or ""))


def pick(found: dict[tuple[str, str], Any], name: str, namespace: str | None,
         kind: str | None, known: list[str], where: str) -> Any:
    """The one server called ``name`` (found: (kind, namespace) -> server); a clear error
    naming how to choose otherwise."""
    found = {k: s for k, s in found.items() if (namespace is None or k[1] == namespace)
             and (kind is None or k[0] == kind)}
    if len(found) == 1:
        return next(iter(found.values()))
    if len({k for k, _ in found}) > 1:
        raise UserError(f"both an OutgoingServer and an IncomingServer are called {name!r}; "
                        "choose one with --kind outgoing or --kind incoming")
    if len(found) > 1:
        namespaces = ", ".join(sorted(ns for _, ns in found))
        raise UserError(f"server {name!r} exists in namespaces {namespaces}; choose one with "
                        "--namespace")
    close = difflib.get_close_matches(name, known, n=1)
    scope = f" in namespace {namespace!r}" if namespace else ""
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise UserError(f"no {kind or 'OutgoingServer or IncomingServer'} {name!r}{scope} "
                    f"{where}{hint}")


def from_store(store_url: str | None, name: str, namespace: str | None,
               kind: str | None) -> Target:
    from reconciler.runtime.namespace import resource_from_canonical

    with opened_store(store_url) as store:
        live = store.snapshot()
    servers = {k: r for k, r in live.resources.items() if k.kind in KINDS}
    found = {(k.kind, k.namespace): r for k, r in servers.items() if k.name == name}
    resource = pick(found, name, namespace, kind, sorted({k.name for k in servers}),
                    "in the live store")
    proxies = {(k.namespace, k.name): r for k, r in live.resources.items()
               if k.kind == "ProxyServer"}
    try:
        model = resource_from_canonical(resource)
        specs = {key: resource_from_canonical(r).spec for key, r in proxies.items()}
    except ValidationError as exc:
        raise UserError(f"the live spec of {resource.key} or a ProxyServer is not valid "
                        f"({exc.error_count()} problem(s)); `reconcile drift` shows what "
                        "changed") from None
    assert isinstance(model, OutgoingServer | IncomingServer)
    return Target(model, specs)


def from_config(root: Path, name: str, namespace: str | None, kind: str | None) -> Target:
    from reconciler.config.models.proxy_server import ProxyServer
    from reconciler.policy.validate import validate_path

    result = validate_path(root)
    models = [r.model for r in result.resources]
    servers = [m for m in models if isinstance(m, OutgoingServer | IncomingServer)]
    found = {(s.kind, s.metadata.namespace): s for s in servers if s.metadata.name == name}
    server = pick(found, name, namespace, kind, sorted({s.metadata.name for s in servers}),
                  f"in {root} (or it did not validate: see `reconcile validate {root}`)")
    errors = len(result.diagnostics.errors)
    if errors:
        click.echo(f"note: {root} has {errors} validation error(s) (`reconcile validate "
                   f"{root}` lists them); testing {name} as written", err=True)
    proxies = {(m.metadata.namespace, m.metadata.name): m.spec for m in models
               if isinstance(m, ProxyServer)}
    return Target(server, proxies)
