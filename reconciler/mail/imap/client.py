"""IMAPClient on a socket we open: direct, or tunnelled through a ProxyServer.

IMAPClient opens its own connection (``socket.create_connection``) and has no public way
to be handed one. The one seam is ``IMAPClient._create_IMAP4`` (private; IMAPClient is
capped below its next minor in pyproject.toml for that), which builds the imaplib object;
ours builds an ``imaplib.IMAP4`` whose ``_create_socket`` (imaplib's own hook, also
private, overridden by IMAPClient itself the same way) asks ``connect``. Implicit TLS is
wrapped here with the server's host name, so certificates are verified against the mail
server whichever way the bytes travel; STARTTLS is IMAPClient's own.
"""

from __future__ import annotations

import imaplib
import socket
import ssl
from typing import Any

from imapclient import IMAPClient

from reconciler.mail.threaded import Connect


class _IMAP4(imaplib.IMAP4):
    def __init__(self, host: str, port: int, connect: Connect,
                 context: ssl.SSLContext | None, timeout: float | None) -> None:
        # not "_connect": imaplib's greeting reader has that name
        self._open_socket, self._context = connect, context
        super().__init__(host, port, timeout)

    def _create_socket(self, timeout: float | None = None) -> socket.socket:
        sock = self._open_socket(timeout)
        if self._context is None:
            return sock
        try:
            return self._context.wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise


class Client(IMAPClient):
    """IMAPClient whose connection comes from ``connect`` (implicit TLS when ``ssl``)."""

    def __init__(self, host: str, port: int, *, connect: Connect, **kwargs: Any) -> None:
        self._open_socket = connect
        super().__init__(host, port, **kwargs)

    def _create_IMAP4(self) -> imaplib.IMAP4:
        timeout = getattr(self._timeout, "connect", None)
        return _IMAP4(self.host, self.port, self._open_socket,
                      self.ssl_context if self.ssl else None, timeout)
