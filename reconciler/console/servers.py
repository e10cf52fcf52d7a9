"""The Servers screen: one card per outgoing and incoming server of each namespace the
principal sees, and "Test connection" for operators.

A card reads only the store contract: the applied spec (live snapshot), the health
record the monitor keeps in the resource status (``health.record``), the OAuth
token row (grant, expiry, last error), the newest SENT audit line (last send: one
query for every server, ``audit.last_sent``) and the incoming fetch state (last
fetch). The connection test walks the same steps as
``reconcile test-connection`` (``health.probes``), without the test message.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

import anyio.to_thread
from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse

from reconciler.config.desired import ResourceKey
from reconciler.config.models.incoming_server import IncomingServer
from reconciler.config.models.outgoing_server import OutgoingServer
from reconciler.console.deps import ConsoleDeps
from reconciler.console.errors import NotFound
from reconciler.console.render import page
from reconciler.console.session import csrf_checked, needs
from reconciler.health import record as rec
from reconciler.health.probes import UnsupportedProtocol, probe_incoming, probe_server
from reconciler.mail.fetcher import FetchError
from reconciler.mail.probe_options import ProbeOptions
from reconciler.mail.steps import ProbeReport
from reconciler.runtime.access import Principal, Role
from reconciler.runtime.namespace import resource_from_canonical
from reconciler.state.base import Store
from reconciler.state.contract import ServerState, TokenRow

OUTGOING, INCOMING = "OutgoingServer", "IncomingServer"
KINDS = {"outgoing": OUTGOING, "incoming": INCOMING}


@dataclass(frozen=True)
class HostView:
    role: str  # main | alternate
    address: str
    state: str
    error: str | None = None
    step: str | None = None


@dataclass(frozen=True)
class ServerCard:
    kind: str
    namespace: str
    name: str
    protocol: str
    enabled: bool
    state: str
    hosts: tuple[HostView, ...] = ()
    last_error: str | None = None
    failed_step: str | None = None
    hint: str | None = None
    last_checked: datetime | None = None
    token: TokenRow | None = None
    last_activity: datetime | None = None
    paused: str | None = None

    @property
    def slug(self) -> str:
        return f"{'outgoing' if self.kind == OUTGOING else 'incoming'}/{self.namespace}/{self.name}"


def _address(spec: Mapping[str, Any], host_key: str, port_key: str) -> str:
    host = spec.get(host_key)
    port = spec.get(port_key)
    return f"{host}:{port}" if host and port else str(host or spec.get("ewsUrl") or "")


def _hosts(spec: Mapping[str, Any], health: rec.HealthRecord | None) -> tuple[HostView, ...]:
    """The spec's hosts, with what the last check found for each."""
    wanted = [(rec.MAIN, _address(spec, "host", "port"))]
    if spec.get("alternateHost"):
        wanted.append((rec.ALTERNATE, _address(spec, "alternateHost", "alternatePort")))
    found = health.hosts if health is not None else {}
    views = []
    for role, address in wanted:
        seen = found.get(role)
        views.append(HostView(role, seen.address if seen and seen.address else address,
                              seen.state if seen else rec.UNKNOWN, seen.error if seen else None,
                              seen.step if seen else None))
    return tuple(views)


def _outgoing(key: ResourceKey, spec: Mapping[str, Any], status: Mapping[str, Any],
              token: TokenRow | None, last_send: datetime | None) -> ServerCard:
    health = rec.read(status)
    return ServerCard(
        OUTGOING, key.namespace, key.name, str(spec.get("protocol", "smtp")),
        bool(spec.get("enabled", True)), health.state if health else rec.UNKNOWN,
        _hosts(spec, health), health.last_error if health else None,
        health.failed_step if health else None,
        health.hint if health else rec.unreadable(status),
        health.last_checked if health else None, token, last_send)


def _incoming(key: ResourceKey, spec: Mapping[str, Any], fetch: ServerState | None,
              token: TokenRow | None) -> ServerCard:
    failing = fetch is not None and fetch.consecutive_failures > 0
    state = rec.UNKNOWN if fetch is None or fetch.last_fetch_at is None else (
        rec.UNREACHABLE if failing else rec.REACHABLE)
    host = HostView(rec.MAIN, _address(spec, "host", "port"), state,
                    fetch.last_error if failing and fetch else None,
                    fetch.last_error_kind if failing and fetch else None)
    return ServerCard(
        INCOMING, key.namespace, key.name, str(spec.get("protocol", "imaps")),
        bool(spec.get("enabled", False)), state, (host,),
        fetch.last_error if failing and fetch else None,
        fetch.last_error_kind if failing and fetch else None, None,
        fetch.last_fetch_at if fetch else None, token,
        fetch.last_success_at if fetch else None, fetch.paused if fetch else None)


def cards(store: Store, principal: Principal, *, activity: bool = True) -> list[ServerCard]:
    """Every server card the principal may see, by namespace, kind and name.

    ``activity`` reads the outgoing servers' last sends (one query for them all),
    which the overview does without."""
    live = store.snapshot()
    keys = sorted((k for k in live.resources if k.kind in (OUTGOING, INCOMING)
                   and principal.sees(k.namespace)),
                  key=lambda k: (k.namespace, k.kind != OUTGOING, k.name))
    if not keys:
        return []
    statuses = store.statuses()
    tokens = {row.key: row for row in store.tokens.all()}
    fetches = {(s.namespace, s.name): s for s in store.incoming.server_states()}
    sent = store.audit.last_sent([(k.namespace, k.name) for k in keys
                                  if k.kind == OUTGOING]) if activity else {}
    out = []
    for key in keys:
        spec = live.resources[key].spec
        token = tokens.get((key.kind, key.namespace, key.name))
        if key.kind == OUTGOING:
            out.append(_outgoing(key, spec, statuses.get(key, {}), token,
                                 sent.get((key.namespace, key.name))))
        else:
            out.append(_incoming(key, spec, fetches.get((key.namespace, key.name)), token))
    return out


def by_namespace(found: list[ServerCard]) -> Iterator[tuple[str, list[ServerCard]]]:
    namespaces = sorted({c.namespace for c in found})
    for namespace in namespaces:
        yield namespace, [c for c in found if c.namespace == namespace]


def _server(deps: ConsoleDeps, principal: Principal, kind: str, namespace: str,
            name: str) -> OutgoingServer | IncomingServer:
    wanted = KINDS.get(kind)
    resource = deps.store.snapshot().resources.get(ResourceKey(wanted or "", namespace, name))
    if wanted is None or resource is None or not principal.sees(namespace):
        raise NotFound(f"server {kind}/{namespace}/{name}")
    server = resource_from_canonical(resource)
    assert isinstance(server, OutgoingServer | IncomingServer)
    return server


def _options(deps: ConsoleDeps, server: OutgoingServer | IncomingServer) -> ProbeOptions:
    tokens = None
    if server.spec.auth.type == "oauth2":
        from reconciler.oauth.provider import provider_for_store

        tokens = provider_for_store(deps.store, key_ref=deps.settings.token_key_ref,
                                    ca_file=deps.settings.ca_file)
    lookup = deps.config.current.proxy_for if isinstance(server, OutgoingServer) else None
    return ProbeOptions(ca_file=deps.settings.ca_file, token_provider=tokens,
                        proxy_lookup=lookup)


async def _walk(server: OutgoingServer | IncomingServer,
                options: ProbeOptions) -> list[ProbeReport]:
    if isinstance(server, IncomingServer):
        return [await probe_incoming(server, options)]
    reports = [await probe_server(server, options=options)]
    if server.spec.alternate_host:
        reports.append(await probe_server(server, alternate=True, options=options))
    return reports


def test_connection(deps: ConsoleDeps, server: OutgoingServer | IncomingServer
                    ) -> tuple[list[ProbeReport], str | None]:
    """Blocking (its own event loop, for a worker thread): the reports, or why none."""
    try:
        return asyncio.run(_walk(server, _options(deps, server))), None
    except (UnsupportedProtocol, FetchError, ValueError) as exc:
        return [], str(exc)


# Module level: FastAPI resolves the (string) annotations in the module's namespace.
Viewer = Annotated[Principal, Depends(needs(Role.VIEWER))]
Operator = Annotated[Principal, Depends(needs(Role.OPERATOR))]


def router(deps: ConsoleDeps) -> APIRouter:
    api = APIRouter()

    @api.get("/servers")
    async def servers(request: Request, principal: Viewer) -> HTMLResponse:
        found = await anyio.to_thread.run_sync(cards, deps.store, principal)
        return page(request, "servers.html", principal, groups=list(by_namespace(found)))

    @api.post("/servers/{kind}/{namespace}/{name}/test",
              dependencies=[Depends(csrf_checked)])
    async def test(request: Request, principal: Operator, kind: str, namespace: str,
                   name: str) -> HTMLResponse:
        server = await anyio.to_thread.run_sync(_server, deps, principal, kind, namespace,
                                                name)
        reports, problem = await anyio.to_thread.run_sync(test_connection, deps, server)
        template = "server_test.html" if request.headers.get("HX-Request") else \
            "server_test_page.html"
        return page(request, template, principal, reports=reports, problem=problem,
                    label=f"{namespace}/{name}")

    return api
