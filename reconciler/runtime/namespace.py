"""One namespace's dispatch configuration as validated models.

The store holds canonical JSON; the daemon re-validates it into the models once
per revision, so routing and transports work on typed, checked data. The view is
immutable: a notification keeps the one it was routed with (O12).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TypeVar

from reconciler.config.desired import CanonicalResource
from reconciler.config.models import KINDS
from reconciler.config.models.base import Resource
from reconciler.config.models.mail_settings import MailSettings
from reconciler.config.models.outgoing_email_rule import OutgoingEmailRule
from reconciler.config.models.outgoing_server import OutgoingServer
from reconciler.config.models.proxy_server import ProxyServer, ProxyServerSpec
from reconciler.config.models.recipient_filter import RecipientFilter
from reconciler.runtime.backoff import RetryPolicy
from reconciler.runtime.routing import RouteDecision, enabled_primaries, route

_Named = TypeVar("_Named", OutgoingServer, RecipientFilter, ProxyServer)
_WANTED = {OutgoingServer.KIND, OutgoingEmailRule.KIND, RecipientFilter.KIND, MailSettings.KIND,
           ProxyServer.KIND}


def resource_from_canonical(resource: CanonicalResource) -> Resource:
    """Re-validate stored JSON into its model; raises pydantic's ValidationError."""
    model = KINDS.get(resource.key.kind)
    if model is None:
        raise ValueError(f"unknown kind {resource.key.kind}")
    return model.model_validate(resource.to_document())


@dataclass(frozen=True)
class NamespaceConfig:
    namespace: str
    servers: Mapping[str, OutgoingServer] = field(default_factory=dict)
    rules: tuple[OutgoingEmailRule, ...] = ()
    filters: Mapping[str, RecipientFilter] = field(default_factory=dict)
    settings: MailSettings | None = None
    proxies: Mapping[str, ProxyServer] = field(default_factory=dict)
    # Derived per server on first use (asked for every message): server name ->
    # (that server, its policy). The view is immutable, so they never go stale.
    _policies: dict[str, tuple[OutgoingServer, RetryPolicy]] = field(
        default_factory=dict, init=False, repr=False, compare=False)

    @classmethod
    def from_resources(cls, namespace: str, resources: Iterable[Resource]) -> NamespaceConfig:
        mine = [r for r in resources if r.metadata.namespace == namespace]

        def named(kind: type[_Named]) -> Mapping[str, _Named]:
            return MappingProxyType({r.metadata.name: r for r in mine if isinstance(r, kind)})

        settings = [r for r in mine if isinstance(r, MailSettings)]
        return cls(namespace, named(OutgoingServer),
                   tuple(r for r in mine if isinstance(r, OutgoingEmailRule)),
                   named(RecipientFilter), settings[-1] if settings else None,
                   named(ProxyServer))

    @classmethod
    def from_canonical(
        cls, namespace: str, resources: Iterable[CanonicalResource]
    ) -> NamespaceConfig:
        models = [resource_from_canonical(r) for r in resources
                  if r.key.namespace == namespace and r.key.kind in _WANTED]
        return cls.from_resources(namespace, models)

    def route(self, module: str, context: Mapping[str, str]) -> RouteDecision:
        return route(module, context, self.rules, self.servers.values())

    def primary(self) -> OutgoingServer | None:
        found = enabled_primaries(self.servers.values())
        return found[0] if found else None

    def recipient_filter(self, server: OutgoingServer) -> RecipientFilter | None:
        """The server's filter, else the namespace default (MailSettings), else None. A
        name that points nowhere raises LookupError rather than meaning "no filter": for an
        allow list that would fail open and mail everyone (the caller records an incomplete
        server, O8)."""
        name = server.spec.recipient_filter or (
            self.settings.spec.recipient_filter if self.settings else None)
        return _named(server, self.filters, name, "RecipientFilter")

    def proxy(self, server: OutgoingServer) -> ProxyServerSpec | None:
        """The proxy the server names, or None for a direct connection. A name that points
        nowhere raises LookupError: going direct would try a route the admin said does
        not exist."""
        found = _named(server, self.proxies, server.spec.proxy, "ProxyServer")
        return found.spec if found is not None else None

    def retry_policy(self, server: OutgoingServer) -> RetryPolicy:
        known = self._policies.get(server.metadata.name)
        if known is not None and known[0] is server:
            return known[1]
        policy = RetryPolicy.from_settings(self.settings.spec.retry if self.settings else None,
                                           server.spec)
        self._policies[server.metadata.name] = (server, policy)
        return policy


def _named(server: OutgoingServer, known: Mapping[str, _Named], name: str | None,
           kind: str) -> _Named | None:
    if not name:
        return None
    found = known.get(name)
    if found is None:
        raise LookupError(f"server {server.metadata.name} uses {kind} {name}, "
                          "which does not exist")
    return found
