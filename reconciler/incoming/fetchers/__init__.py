"""Fetchers: one per IncomingServer protocol behind :class:`base.Fetcher`.

Protocol modules are imported on use so that loading the package costs nothing.
"""

from __future__ import annotations

from pathlib import Path

from reconciler.config.models.incoming_server import IncomingProtocol, IncomingServer
from reconciler.incoming.fetchers.base import (
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
) -> Fetcher:
    """The fetcher for the server's protocol (not connected yet).

    ``ca_file`` adds a private CA to the system ones (default: the
    ``RECONCILE_TLS_CA_FILE`` environment variable); ``timeout`` bounds each
    network operation; ``delete_after_fetch`` lets POP3 ``DELE`` handled mail.
    """
    protocol = IncomingProtocol(server.spec.protocol)
    if protocol in (IncomingProtocol.IMAP, IncomingProtocol.IMAPS):
        from reconciler.incoming.fetchers.imap import ImapFetcher

        return ImapFetcher(server, token_provider=token_provider, ca_file=ca_file,
                           timeout=timeout)
    if protocol in (IncomingProtocol.POP3, IncomingProtocol.POP3S):
        from reconciler.incoming.fetchers.pop3 import Pop3Fetcher

        return Pop3Fetcher(server, token_provider=token_provider, ca_file=ca_file,
                           timeout=timeout, delete_after_fetch=delete_after_fetch)
    raise FetchError(FetchErrorKind.CONFIG,
                     f"incoming server {server.metadata.name}: fetching over {protocol} is "
                     "not available yet",
                     "Use imap, imaps, pop3 or pop3s for this mailbox for now.")
