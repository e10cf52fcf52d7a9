"""The one place that knows which fetcher serves which incoming protocol (SPEC I1).

Like an octoDNS provider, a protocol plugs in with one row of :data:`FETCHERS`:
the class (imported on first use, so loading the registry costs nothing) and
the options of :func:`fetcher_for` it takes beyond the common ones.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path

from reconciler.config.models.incoming_server import IncomingProtocol, IncomingServer
from reconciler.config.models.proxy_server import ProxyServerSpec
from reconciler.mail.fetcher import Fetcher
from reconciler.oauth.source import TokenProvider

# protocol -> ("module:Class", the extra options that class accepts)
FETCHERS: dict[IncomingProtocol, tuple[str, tuple[str, ...]]] = {
    IncomingProtocol.IMAP: ("reconciler.mail.imap.fetcher:ImapFetcher", ()),
    IncomingProtocol.IMAPS: ("reconciler.mail.imap.fetcher:ImapFetcher", ()),
    IncomingProtocol.POP3: ("reconciler.mail.pop3.fetcher:Pop3Fetcher", ("delete_after_fetch",)),
    IncomingProtocol.POP3S: ("reconciler.mail.pop3.fetcher:Pop3Fetcher", ("delete_after_fetch",)),
    IncomingProtocol.EWS: ("reconciler.mail.ews.fetcher:EwsFetcher", ("proxy_lookup",)),
    IncomingProtocol.GRAPH: ("reconciler.mail.graph.fetcher:GraphFetcher", ("proxy_lookup",)),
}


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
    ``proxy_lookup`` finds the ProxyServer an EWS or Graph server names.
    """
    where, extra = FETCHERS[IncomingProtocol(server.spec.protocol)]
    module, name = where.split(":")
    options = {"delete_after_fetch": delete_after_fetch, "proxy_lookup": proxy_lookup}
    fetcher: type[Fetcher] = getattr(importlib.import_module(module), name)
    return fetcher(server, token_provider=token_provider, ca_file=ca_file,  # type: ignore[call-arg]
                   timeout=timeout, **{k: options[k] for k in extra})
