"""One SMTP session on aiosmtplib: the steps the transport and the connection check
share, so both connect, greet, secure and close the same way.

The transport opens a session to ``host:port`` and runs the steps in one go; the
connection check opens it on the socket its TCP step connected and runs each step on
its own, so it can say which one failed and how long each took. AUTH is
:mod:`~reconciler.mail.smtp.auth`; every failure is classified by
:mod:`~reconciler.mail.smtp.errors`.
"""

from __future__ import annotations

import contextlib
import socket
import ssl

import aiosmtplib
from aiosmtplib import SMTPException, SMTPHeloError, SMTPResponse

from reconciler.config.models.outgoing_server import Security
from reconciler.mail.failover import Endpoint
from reconciler.mail.failure import MailFailure
from reconciler.mail.outcome import Failure
from reconciler.mail.smtp.errors import no_starttls
from reconciler.mail.steps import Reason, Step

_QUIT_TIMEOUT = 2.0


def new_session(endpoint: Endpoint, security: Security, context: ssl.SSLContext, name: str,
                *, timeout: float | None, sock: socket.socket | None = None) -> aiosmtplib.SMTP:
    """A session to ``endpoint`` (over ``sock`` when given), not connected yet.

    STARTTLS is left to :func:`starttls`, so that a failure can say which step it was.
    """
    try:
        return aiosmtplib.SMTP(
            hostname=endpoint.host, port=None if sock else endpoint.port, sock=sock,
            use_tls=security == Security.TLS, start_tls=False, tls_context=context,
            timeout=timeout, local_hostname=name)
    except ValueError as exc:  # e.g. an unusable local host name for EHLO
        raise MailFailure(Step.EHLO, Reason.REJECTED, str(exc), failure=Failure.CONFIG,
                          permanent=True) from None


async def greet(smtp: aiosmtplib.SMTP) -> None:
    """EHLO (HELO if EHLO is refused) unless done, as aiosmtplib's mail() starts with."""
    if not smtp.is_ehlo_or_helo_needed:
        return
    try:
        await smtp.ehlo()
    except SMTPHeloError:
        if not smtp.is_connected:
            raise
        await smtp.helo()


def offers(smtp: aiosmtplib.SMTP) -> str:
    """What the greeted server offers that matters here, for people."""
    if not smtp.supports_esmtp:
        return (f"HELO accepted ({smtp.local_hostname}); the server offers no ESMTP "
                "extensions")
    shown = []
    if smtp.supports_extension("starttls"):
        shown.append("STARTTLS")
    if smtp.server_auth_methods:
        shown.append("AUTH " + " ".join(m.upper() for m in smtp.server_auth_methods))
    if smtp.esmtp_extensions.get("size"):
        shown.append(f"SIZE {smtp.esmtp_extensions['size']}")
    return "offers " + ", ".join(shown) if shown else "accepted (no STARTTLS or AUTH offered)"


async def starttls(smtp: aiosmtplib.SMTP, endpoint: Endpoint) -> SMTPResponse:
    """STARTTLS, then EHLO again (RFC 3207: forget what was offered in plaintext)."""
    await greet(smtp)
    if not smtp.supports_extension("starttls"):
        raise no_starttls(endpoint)
    reply = await smtp.starttls()
    await smtp.ehlo()
    return reply


async def rset(smtp: aiosmtplib.SMTP) -> None:
    if not smtp.is_connected:
        return
    try:
        await smtp.rset()
    except (SMTPException, OSError, TimeoutError):
        close(smtp)


def is_open(smtp: aiosmtplib.SMTP) -> bool:
    return smtp.is_connected


async def alive(smtp: aiosmtplib.SMTP, timeout: float) -> bool:
    """Answers NOOP: worth reusing after lying idle."""
    if not smtp.is_connected:
        return False
    try:
        reply = await smtp.noop(timeout=timeout)
    except (SMTPException, OSError, TimeoutError):
        return False
    return reply.code == 250


def close(smtp: aiosmtplib.SMTP) -> None:
    # A connection we drop is dead to us: abort instead of close, because a
    # graceful TLS shutdown needs round trips that may never come (and would
    # leave the socket open until they do).
    transport = smtp.transport
    if transport is not None and not transport.is_closing():
        transport.abort()
    smtp.close()


async def retire(smtp: aiosmtplib.SMTP) -> None:
    """Say goodbye, then drop the socket without waiting for the TLS goodbye (see close)."""
    transport = smtp.transport
    if smtp.is_connected:
        with contextlib.suppress(SMTPException, OSError, TimeoutError):
            await smtp.quit(timeout=_QUIT_TIMEOUT)
    if transport is not None:
        transport.abort()
