"""The one place that knows which code serves which protocol.

Like an octoDNS provider, a protocol plugs in with one folder under ``mail/`` and
one row here: :data:`OUTGOING` (its transport and its connection check, SPEC O5,
O9) or :data:`FETCHERS` (its fetcher, SPEC I1) and :data:`INCOMING_CHECKS` (its
connection check, SPEC I9). Classes and functions are named
as ``module:attribute`` and imported on first use, so loading the registry costs
nothing; each row lists the options beyond the common ones that its class takes.
Dispatch, health, test-connection and incoming ask here and never name a protocol.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reconciler.config.models.incoming_server import IncomingProtocol, IncomingServer
from reconciler.config.models.outgoing_server import OutgoingProtocol, OutgoingServer
from reconciler.config.models.proxy_server import ProxyServerSpec
from reconciler.mail.failover import Endpoint, HostSelector
from reconciler.mail.fetcher import Fetcher
from reconciler.mail.probe_options import ProbeOptions
from reconciler.mail.steps import Step, StepResult
from reconciler.mail.transport import Transport
from reconciler.oauth.source import TokenProvider

if TYPE_CHECKING:  # loaded on first use, like every class named here
    from reconciler.mail.incoming_check import MailboxCheck

Walker = Callable[[OutgoingServer, Endpoint, ProbeOptions], Awaitable[list[StepResult]]]
Planner = Callable[[OutgoingServer], tuple[Step, ...]]
Endpoints = Callable[[OutgoingServer], tuple[Endpoint, Endpoint | None]]


@dataclass(frozen=True, slots=True)
class Outgoing:
    """An outgoing protocol: its transport class and the options it takes, and its check."""

    transport: str  # "module:Class", a Transport
    options: tuple[str, ...]  # of transport_for's optional keywords, the ones it accepts
    plan: str  # "module:function": the steps its check walks, in order
    walk: str  # "module:function": walks them for one host
    # Where the check goes when that is not spec.host/port (Graph: its endpoint URL).
    endpoints: str | None = None


OUTGOING: dict[OutgoingProtocol, Outgoing] = {
    OutgoingProtocol.SMTP: Outgoing(
        "reconciler.mail.smtp.transport:SmtpTransport",
        ("selector", "connect_timeout", "local_hostname", "proxy_lookup"),
        "reconciler.mail.smtp.probe:smtp_plan", "reconciler.mail.smtp.probe:walk_smtp"),
    OutgoingProtocol.GRAPH: Outgoing(
        "reconciler.mail.graph.transport:GraphTransport", ("proxy_lookup", "connect_timeout"),
        "reconciler.mail.graph.probe:graph_plan", "reconciler.mail.graph.probe:walk_graph",
        "reconciler.mail.graph.probe:graph_endpoints"),
    OutgoingProtocol.EWS: Outgoing(
        "reconciler.mail.ews.transport:EwsTransport", ("selector", "proxy_lookup"),
        "reconciler.mail.ews.probe:ews_plan", "reconciler.mail.ews.probe:walk_ews",
        "reconciler.mail.ews.probe:ews_endpoints"),
}


def _load(where: str) -> Any:
    module, name = where.split(":")
    return getattr(importlib.import_module(module), name)


def transport_for(
    protocol: OutgoingProtocol | str,
    *,
    ca_file: str | Path | None = None,
    token_provider: TokenProvider | None = None,
    selector: HostSelector | None = None,
    proxy_lookup: Callable[[OutgoingServer], ProxyServerSpec | None] | None = None,
    connect_timeout: float | None = None,
    local_hostname: str | None = None,
) -> Transport:
    """A new transport for ``protocol``; KeyError for a protocol with no transport.

    ``selector`` is shared with the health monitor so failover and failback agree;
    ``proxy_lookup`` finds the ProxyServer a server names in the current revision.
    Options the protocol does not take, and options left at None, are not passed.
    """
    entry = OUTGOING[OutgoingProtocol(protocol)]
    given = {"selector": selector, "proxy_lookup": proxy_lookup,
             "connect_timeout": connect_timeout, "local_hostname": local_hostname}
    extra = {k: given[k] for k in entry.options if given[k] is not None}
    made: Transport = _load(entry.transport)(ca_file=ca_file, token_provider=token_provider,
                                             **extra)
    return made


def check_steps(server: OutgoingServer) -> tuple[Planner, Walker, Endpoints | None]:
    """The connection check of the server's protocol; KeyError when it has none."""
    entry = OUTGOING[OutgoingProtocol(server.spec.protocol)]
    return (_load(entry.plan), _load(entry.walk),
            _load(entry.endpoints) if entry.endpoints else None)

# protocol -> ("module:Class", the extra options that class accepts)
FETCHERS: dict[IncomingProtocol, tuple[str, tuple[str, ...]]] = {
    IncomingProtocol.IMAP: ("reconciler.mail.imap.fetcher:ImapFetcher", ("proxy_lookup",)),
    IncomingProtocol.IMAPS: ("reconciler.mail.imap.fetcher:ImapFetcher", ("proxy_lookup",)),
    IncomingProtocol.POP3: ("reconciler.mail.pop3.fetcher:Pop3Fetcher",
                            ("delete_after_fetch", "proxy_lookup")),
    IncomingProtocol.POP3S: ("reconciler.mail.pop3.fetcher:Pop3Fetcher",
                             ("delete_after_fetch", "proxy_lookup")),
    IncomingProtocol.EWS: ("reconciler.mail.ews.fetcher:EwsFetcher", ("proxy_lookup",)),
    IncomingProtocol.GRAPH: ("reconciler.mail.graph.fetcher:GraphFetcher", ("proxy_lookup",)),
}


# protocol -> "module:Class", a MailboxCheck: the connection check (SPEC I9)
INCOMING_CHECKS: dict[IncomingProtocol, str] = {
    IncomingProtocol.IMAP: "reconciler.mail.imap.probe:ImapCheck",
    IncomingProtocol.IMAPS: "reconciler.mail.imap.probe:ImapCheck",
    IncomingProtocol.POP3: "reconciler.mail.pop3.probe:Pop3Check",
    IncomingProtocol.POP3S: "reconciler.mail.pop3.probe:Pop3Check",
    IncomingProtocol.EWS: "reconciler.mail.ews.probe:EwsCheck",
    IncomingProtocol.GRAPH: "reconciler.mail.graph.probe:GraphCheck",
}


def incoming_check(server: IncomingServer, options: ProbeOptions) -> MailboxCheck:
    """The connection check of the server's protocol; KeyError when it has none."""
    check: type[MailboxCheck] = _load(INCOMING_CHECKS[IncomingProtocol(server.spec.protocol)])
    return check(server, options)


def fetcher_for(
    server: IncomingServer,
    *,
    token_provider: TokenProvider | None = None,
    ca_file: str | Path | None = None,
    timeout: float = 30.0,
    delete_after_fetch: bool = False,
    proxy_lookup: Callable[[IncomingServer], ProxyServerSpec | None] | None = None,
) -> Fetcher:
    """The fetcher for the server's protocol (not connected yet).

    ``ca_file`` adds a private CA to the system ones (default: the
    ``RECONCILE_TLS_CA_FILE`` environment variable); ``timeout`` bounds each
    network operation; ``delete_after_fetch`` lets POP3 ``DELE`` handled mail;
    ``proxy_lookup`` finds the ProxyServer the server names.
    """
    where, extra = FETCHERS[IncomingProtocol(server.spec.protocol)]
    options = {"delete_after_fetch": delete_after_fetch, "proxy_lookup": proxy_lookup}
    fetcher: type[Fetcher] = _load(where)
    return fetcher(server, token_provider=token_provider, ca_file=ca_file,  # type: ignore[call-arg]
                   timeout=timeout, **{k: options[k] for k in extra})
