"""Which IncomingServers a revision runs, with what each one's pipeline needs (SPEC I1).

:class:`~reconciler.runtime.live_config.LiveConfig` holds only what dispatch
uses, so the runner reads the revision's snapshot again for the incoming kinds.
A server's *fingerprint* digests every resource of its namespace the pipeline
reads; a new revision restarts only the servers whose fingerprint changed.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from pydantic import ValidationError

from reconciler.config.desired import CanonicalResource, canonical_json
from reconciler.config.models.base import Resource
from reconciler.config.models.incoming_server import IncomingServer
from reconciler.config.models.proxy_server import ProxyServer, ProxyServerSpec
from reconciler.runtime.namespace import resource_from_canonical
from reconciler.state.base import LiveState

log = logging.getLogger(__name__)

# Kinds the pipeline reads besides the server itself (PipelineContext.from_resources).
PIPELINE_KINDS = frozenset({
    "IncomingServer", "RecipientFilter", "SpamFilter", "EmailCommand", "IncomingEmailRule",
    "MailSettings", "OutgoingServer", "ProxyServer",  # ProxyServer: EWS/Graph fetchers
    "SenderDirectory",
})

ServerId = tuple[str, str]  # namespace, name


@dataclass(frozen=True)
class ServerConfig:
    server: IncomingServer
    resources: tuple[Resource, ...]  # the namespace's resources of PIPELINE_KINDS
    fingerprint: str

    @property
    def id(self) -> ServerId:
        return self.server.metadata.namespace, self.server.metadata.name


def proxy_of(server: IncomingServer, resources: Iterable[Resource]) -> ProxyServerSpec | None:
    """The ProxyServer the server names (``fetcher_for``'s proxy_lookup)."""
    wanted = (server.metadata.namespace, server.spec.proxy)
    found = (r.spec for r in resources if isinstance(r, ProxyServer)
             and (r.metadata.namespace, r.metadata.name) == wanted)
    return next(found, None) if server.spec.proxy is not None else None


@dataclass(frozen=True)
class IncomingConfig:
    revision: int
    servers: Mapping[ServerId, ServerConfig] = field(default_factory=dict)  # enabled ones

    @classmethod
    def from_snapshot(cls, live: LiveState) -> IncomingConfig:
        by_namespace: dict[str, list[CanonicalResource]] = {}
        for key, resource in live.resources.items():
            if key.kind in PIPELINE_KINDS:
                by_namespace.setdefault(key.namespace, []).append(resource)
        servers: dict[ServerId, ServerConfig] = {}
        for namespace, canon in sorted(by_namespace.items()):
            try:
                models = tuple(resource_from_canonical(r) for r in canon)
            except ValidationError as exc:
                log.error("namespace %s at revision %s is invalid; its incoming servers are "
                          "not fetched: %s", namespace, live.revision, exc.error_count())
                continue
            # Every server's addresses are "own mail" to the others, so any change
            # in these kinds restarts the namespace's servers (a reconnect, no loss).
            fingerprint = _digest(canon)
            for model in models:
                if isinstance(model, IncomingServer) and model.spec.enabled:
                    sid = (namespace, model.metadata.name)
                    servers[sid] = ServerConfig(model, models, fingerprint)
        return cls(live.revision, MappingProxyType(servers))


def _digest(resources: Iterable[CanonicalResource]) -> str:
    parts = sorted(f"{r.key.kind}/{r.key.name}:{r.digest or canonical_json(r.body())}"
                   for r in resources)
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()
