"""Fetchers: one per IncomingServer protocol behind :class:`base.Fetcher`.

Protocol modules are imported on use so that loading the package costs nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from reconciler.config.models.incoming_server import IncomingProtocol, IncomingServer
from reconciler.config.models.proxy_server import ProxyServerSpec
from reconciler.mail.fetcher import (
    AlreadyDone,
    FetchedMail,
    Fetcher,
    FetchError,
    FetchErrorKind,
    IncomingTokenProvider,
    NotSupported,
)

__all__ = [
    "AlreadyDone",
    "FetchError",
    "FetchErrorKind",
    "FetchedMail",
    "Fetcher",
    "IncomingTokenProvider",
    "NotSupported",
    "fetcher_for",
]


def fetcher_for(
    server: IncomingServer,
    *,
    token_provider: IncomingTokenProvider | None = None,
    ca_file: str | Path | None = None,
    timeout: float = 30.0,
    delete_after_fetch: bool = False,
    proxy_lookup: Callable[[IncomingServer], ProxyServerSpec | None] | None = None,
) -> Fetcher:
    """The fetcher for the server's protocol (not connected yet).

    ``ca_file`` adds a private CA to the system ones (default: the
    ``RECONCILE_TLS_CA_FILE`` environment variable); ``timeout`` bounds each
    network operation; ``delete_after_fetch`` lets POP3 ``DELE`` handled mail;
    ``proxy_lookup`` finds the ProxyServer an EWS or Graph server names.
    """
    protocol = IncomingProtocol(server.spec.protocol)
    if protocol in (IncomingProtocol.IMAP, IncomingProtocol.IMAPS):
        from reconciler.mail.imap.fetcher import ImapFetcher

        return ImapFetcher(server, token_provider=token_provider, ca_file=ca_file,
                           timeout=timeout)
    if protocol in (IncomingProtocol.POP3, IncomingProtocol.POP3S):
        from reconciler.mail.pop3.fetcher import Pop3Fetcher

        return Pop3Fetcher(server, token_provider=token_provider, ca_file=ca_file,
                           timeout=timeout, delete_after_fetch=delete_after_fetch)
    if protocol == IncomingProtocol.EWS:
        from reconciler.mail.ews.fetcher import EwsFetcher

        return EwsFetcher(server, token_provider=token_provider, ca_file=ca_file,
                          timeout=timeout, proxy_lookup=proxy_lookup)
    if protocol == IncomingProtocol.GRAPH:
        from reconciler.mail.graph.fetcher import GraphFetcher

        return GraphFetcher(server, token_provider=token_provider, ca_file=ca_file,
                            timeout=timeout, proxy_lookup=proxy_lookup)
    raise FetchError(FetchErrorKind.CONFIG,
                     f"incoming server {server.metadata.name}: fetching over {protocol} is "
                     "not available yet",
                     "Use imap, imaps, pop3 or pop3s for this mailbox for now.")
