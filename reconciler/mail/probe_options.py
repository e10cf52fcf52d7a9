"""What a probe needs besides the server: trusted CAs, tokens, a time budget."""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reconciler.config.models.incoming_server import IncomingServerSpec
from reconciler.config.models.outgoing_server import OutgoingServerSpec
from reconciler.config.models.proxy_server import ProxyServerSpec
from reconciler.mail.proxies import route
from reconciler.oauth.source import TokenProvider
from reconciler.runtime.tls import CA_FILE_ENV, tls_context

# A health check should not wait a server's full send deadline (60 s by default):
# a probe that hangs that long says "unreachable" no better than one that gives up sooner.
DEFAULT_PROBE_TIMEOUT = 30.0


@dataclass
class ProbeOptions:
    ca_file: str | Path | None = None  # extra trusted CAs; RECONCILE_TLS_CA_FILE otherwise
    token_provider: TokenProvider | None = None  # OAuth2 servers (O11)
    timeout: float | None = None  # whole walk; default min(server timeoutSeconds, 30 s)
    local_hostname: str | None = None  # the EHLO name; this machine's FQDN otherwise
    # The ProxyServer a server names (OutgoingServer or IncomingServer), as transports get it.
    proxy_lookup: Callable[[Any], ProxyServerSpec | None] | None = None
    _context: ssl.SSLContext | None = field(default=None, init=False, repr=False)

    def budget(self, spec: OutgoingServerSpec | IncomingServerSpec) -> float:
        if self.timeout is not None:
            return self.timeout
        return min(getattr(spec, "timeout_seconds", DEFAULT_PROBE_TIMEOUT), DEFAULT_PROBE_TIMEOUT)

    def proxy_for(self, server: Any, host: str) -> ProxyServerSpec | None:
        """The proxy a connection of ``server`` to ``host`` goes through; None for direct
        (see :func:`~reconciler.mail.proxies.route`; raises MailFailure)."""
        return route(server, self.proxy_lookup, host)

    def tls(self) -> ssl.SSLContext:
        """The same verifying context the transport uses; built once (loading CAs is slow)."""
        if self._context is None:
            self._context = tls_context(self.ca_file or os.environ.get(CA_FILE_ENV) or None)
        return self._context

    async def ehlo_name(self) -> str:
        if self.local_hostname is None:
            # getfqdn can block on DNS: once, off the event loop.
            self.local_hostname = await asyncio.to_thread(socket.getfqdn)
        return self.local_hostname
