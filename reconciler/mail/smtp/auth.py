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
from collections.abc import Callable

import aiosmtplib
from aiosmtplib import SMTPAuthenticationError

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

BASIC_MECHANISMS = ("plain", "login", "cram-md5")


async def authenticate(smtp: aiosmtplib.SMTP, server: OutgoingServer, endpoint: Endpoint,
                       redactor: Redactor, tokens: TokenProvider | None) -> str:
    """Log in as ``server.spec.auth`` says; ``user (MECHANISM)``, or "" for no auth."""
    auth = server.spec.auth
    if isinstance(auth, NoAuth):
        return ""
    await greet(smtp)
    username = auth.username or server.spec.email
    offered = smtp.server_auth_methods
    if isinstance(auth, BasicAuth):
        secret = _credential(lambda: present_secret(auth.password, endpoint.host,
                                                    endpoint.port))
        redactor.add(secret, username=username)
        mechanism = next((m for m in BASIC_MECHANISMS if m in offered), "")
    else:
        assert isinstance(auth, OAuth2Auth)
        _credential(lambda: require_client(auth, endpoint.host, endpoint.port))
        secret = await _token(tokens, server, redactor, username)
        mechanism = "xoauth2" if "xoauth2" in offered else ""
    if not mechanism:
        raise _not_offered(smtp, "XOAUTH2" if isinstance(auth, OAuth2Auth) else "PLAIN/LOGIN")
    login = getattr(smtp, "auth_" + mechanism.replace("-", ""))
    refreshed = False
    try:
        try:
            await login(username, secret)
        except SMTPAuthenticationError as exc:
            # 535 to XOAUTH2: the token was revoked or is not yet valid at the mail
            # server. Refresh once; a second refusal is final.
            if mechanism != "xoauth2" or exc.code != 535 or not await invalidate_token(
                    tokens, server, secret):
                raise
            log.info("%s refused the access token for %s (%s); refreshing once",
                     server.display, username, exc.code)
            secret, refreshed = await _token(tokens, server, redactor, username), True
            await login(username, secret)
    except SMTPAuthenticationError as exc:
        raise auth_refused(exc.code, redactor(exc.message), username,
                           refreshed=refreshed) from None
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


def _not_offered(smtp: aiosmtplib.SMTP, wanted: str) -> MailFailure:
    offered = smtp.server_auth_methods
    if not offered and smtp.get_transport_info("sslcontext") is None:
        return MailFailure(Step.AUTH, Reason.AUTH_NOT_OFFERED_PLAINTEXT,
                           f"the server offers no {wanted} authentication on an unencrypted "
                           "connection; most servers only offer it after STARTTLS or over TLS",
                           failure=Failure.CONFIG, permanent=True)
    shown = ", ".join(m.upper() for m in offered) or "none"
    return MailFailure(Step.AUTH, Reason.AUTH_NOT_OFFERED, f"the server does not offer "
                       f"{wanted} authentication (offers: {shown})", failure=Failure.CONFIG,
                       permanent=True)
