"""SMTP AUTH: the one implementation the transport and the connection check share.

Basic uses PLAIN, else LOGIN, else CRAM-MD5 (one attempt with the first the server
offers, so a wrong password costs one failed login, not three); OAuth2 uses XOAUTH2
with a token from the token provider, refreshed once when the server refuses it
(535: revoked, or not yet valid at the mail server). Secrets are resolved per
connection, only for the endpoint an apply bound them to (SPEC S2), and go into the
caller's redactor in every encoding AUTH puts them in.

Every failure is a MailFailure; an error of the connection itself is left to the
caller's classifier (:func:`~reconciler.mail.smtp.errors.error_failure`).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence

import aiosmtplib
from aiosmtplib import SMTPResponse
from aiosmtplib.auth import (
    auth_crammd5_verify,
    auth_login_encode,
    auth_plain_encode,
    auth_xoauth2_encode,
)

from reconciler.config.models.auth import BasicAuth, NoAuth, OAuth2Auth
from reconciler.config.models.outgoing_server import OutgoingServer
from reconciler.config.secrets import SecretError
from reconciler.credentials.gate import CredentialNotBound, present_secret, require_client
from reconciler.mail.failover import Endpoint
from reconciler.mail.failure import MailFailure
from reconciler.mail.outcome import Failure
from reconciler.mail.smtp.errors import auth_refused
from reconciler.mail.smtp.session import greet
from reconciler.mail.steps import Reason, Step
from reconciler.mail.transport import Redactor
from reconciler.oauth.source import TokenError, TokenProvider, fetch_token, invalidate_token

log = logging.getLogger(__name__)

Execute = Callable[..., Awaitable[SMTPResponse]]
BASIC_MECHANISMS = ("plain", "login", "cram-md5")
AUTH_CONTINUE, AUTH_OK = 334, 235


async def authenticate(smtp: aiosmtplib.SMTP, server: OutgoingServer, endpoint: Endpoint,
                       redactor: Redactor, tokens: TokenProvider | None) -> str:
    """Log in as ``server.spec.auth`` says; ``user (MECHANISM)``, or "" for no auth."""
    auth = server.spec.auth
    if isinstance(auth, NoAuth):
        return ""
    await greet(smtp)
    execute, offered = smtp.execute_command, smtp.server_auth_methods
    encrypted = smtp.get_transport_info("sslcontext") is not None
    username = auth.username or server.spec.email
    refreshed = False
    if isinstance(auth, BasicAuth):
        password = _credential(lambda: present_secret(auth.password, endpoint.host,
                                                      endpoint.port))
        redactor.add(password, username=username)
        mechanism = next((m for m in BASIC_MECHANISMS if m in offered), "")
        if not mechanism:
            raise _not_offered("PLAIN/LOGIN", offered, encrypted)
        reply = await _basic(execute, mechanism, username, password)
    else:
        assert isinstance(auth, OAuth2Auth)
        _credential(lambda: require_client(auth, endpoint.host, endpoint.port))
        token = await _token(tokens, server, redactor, username)
        mechanism = "xoauth2"
        if mechanism not in offered:
            raise _not_offered("XOAUTH2", offered, encrypted)
        reply = await _xoauth2(execute, username, token)
        if reply.code == 535 and await invalidate_token(tokens, server, token):
            log.info("%s refused the access token for %s (%s); refreshing once",
                     server.display, username, reply.code)
            token = await _token(tokens, server, redactor, username)
            refreshed = True
            reply = await _xoauth2(execute, username, token)
    if reply.code != AUTH_OK:
        raise auth_refused(reply.code, redactor(reply.message), username, refreshed=refreshed)
    return f"{username} ({mechanism.upper()})"


def _credential(resolve: Callable[[], str | None]) -> str:
    try:
        return str(resolve() or "")
    except CredentialNotBound as exc:
        raise MailFailure(Step.AUTH, Reason.NOT_BOUND, str(exc), failure=Failure.CONFIG,
                          permanent=True) from None
    except SecretError as exc:
        raise MailFailure(Step.AUTH, Reason.SECRET, f"cannot read the password: {exc}",
                          failure=Failure.CONFIG, permanent=True) from None


async def _token(tokens: TokenProvider | None, server: OutgoingServer, redactor: Redactor,
                 username: str) -> str:
    if tokens is None:
        raise MailFailure(Step.AUTH, Reason.NO_TOKEN_PROVIDER, "OAuth2 server but no token "
                          "provider is configured", failure=Failure.CONFIG, permanent=True)
    try:
        token = await fetch_token(tokens, server)
    except TokenError as exc:
        # A permanent token error (revoked grant, bad secret) already says how to fix it.
        raise MailFailure(Step.AUTH, Reason.TOKEN_PERMANENT if exc.permanent else Reason.TOKEN,
                          f"no access token: {exc}", failure=Failure.AUTH,
                          permanent=exc.permanent) from None
    redactor.add(token, username=username)
    return token


async def _basic(execute: Execute, mechanism: str, username: str,
                 password: str) -> SMTPResponse:
    if mechanism == "plain":
        return await execute(b"AUTH", b"PLAIN", auth_plain_encode(username, password))
    if mechanism == "login":
        user, secret = auth_login_encode(username, password)
        reply = await execute(b"AUTH", b"LOGIN", user)
        return await execute(secret) if reply.code == AUTH_CONTINUE else reply
    reply = await execute(b"AUTH", b"CRAM-MD5")
    if reply.code != AUTH_CONTINUE:
        return reply
    return await execute(auth_crammd5_verify(username, password, reply.message))


async def _xoauth2(execute: Execute, username: str, token: str) -> SMTPResponse:
    reply = await execute(b"AUTH", b"XOAUTH2", auth_xoauth2_encode(username, token))
    if reply.code == AUTH_CONTINUE:  # the error details come as a challenge; "" ends it
        reply = await execute(b"")
    return reply


def _not_offered(wanted: str, offered: Sequence[str], encrypted: bool) -> MailFailure:
    if not offered and not encrypted:
        return MailFailure(Step.AUTH, Reason.AUTH_NOT_OFFERED_PLAINTEXT,
                           f"the server offers no {wanted} authentication on an unencrypted "
                           "connection; most servers only offer it after STARTTLS or over TLS",
                           failure=Failure.CONFIG, permanent=True)
    shown = ", ".join(m.upper() for m in offered) or "none"
    return MailFailure(Step.AUTH, Reason.AUTH_NOT_OFFERED, f"the server does not offer "
                       f"{wanted} authentication (offers: {shown})", failure=Failure.CONFIG,
                       permanent=True)
