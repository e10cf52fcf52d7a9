"""The one classifier of SMTP: every reply, SMTP, socket and TLS error becomes a
:class:`~reconciler.mail.failure.MailFailure` here (the O7 table in ``docs/dispatch.md``).

The transport turns it into the send's result, the connection check into the failed
step; so a refused login, an untrusted certificate or a lost connection reads the same
in the audit, the health status and ``reconcile test-connection``.
"""

from __future__ import annotations

import errno
import ssl

from aiosmtplib import (
    SMTPConnectError,
    SMTPConnectResponseError,
    SMTPConnectTimeoutError,
    SMTPException,
    SMTPHeloError,
    SMTPResponseException,
    SMTPServerDisconnected,
    SMTPTimeoutError,
)

from reconciler.config.models.outgoing_server import Security
from reconciler.mail.certificates import certificate_failure
from reconciler.mail.failover import Endpoint
from reconciler.mail.failure import MailFailure
from reconciler.mail.outcome import Failure, Outcome, outcome_for_reply
from reconciler.mail.results import describe
from reconciler.mail.steps import Reason, Step
from reconciler.runtime.tls import ssl_cause


def unreached(failure: MailFailure) -> bool:
    """The host is not there at all (no name, no TCP, silence or hang-up before the
    greeting): the one kind of failure worth trying the alternate host for (O6)."""
    return (failure.step in (Step.DNS, Step.TCP, Step.PROXY, Step.GREETING)
            and failure.failure in (Failure.CONNECT, Failure.TIMEOUT))


def reply_failure(code: int, message: str, step: Step, doing: str,
                  refused: Reason | None = None) -> MailFailure:
    """A reply where another was expected; ``refused`` is the reason for a 5xx (by
    default: STARTTLS refused at the TLS step, else rejected)."""
    if refused is None:
        refused = Reason.NO_STARTTLS if step == Step.TLS else Reason.REJECTED
    text = f"{code} {message}"
    if code in (534, 535):  # 534: mechanism too weak, an app password is needed
        return MailFailure(step, Reason.APP_PASSWORD if code == 534 else Reason.AUTH_FAILED,
                           f"authentication failed: {text}", failure=Failure.AUTH,
                           permanent=True, code=code)
    if code == 530:
        reason = (Reason.ENCRYPTION_REQUIRED if "STARTTLS" in message.upper()
                  else Reason.AUTH_REQUIRED)
        return MailFailure(step, reason, f"the server requires authentication: {text}",
                           failure=Failure.AUTH, permanent=True, code=code)
    temporary = 400 <= code < 500
    return MailFailure(step, Reason.TEMPORARY if temporary else refused,
                       f"{text} (while {doing})",
                       failure=Failure.TLS if step == Step.TLS else Failure.REJECTED,
                       # a success code where an error was expected: worth another try
                       permanent=outcome_for_reply(code) == Outcome.PERMANENT, code=code)


def auth_refused(code: int, message: str, username: str, *, refreshed: bool = False,
                 ) -> MailFailure:
    """The server's last word on AUTH when it was not 235."""
    text = f"{code} {message}"
    if code in (530, 538):
        return MailFailure(Step.AUTH, Reason.ENCRYPTION_REQUIRED,
                           f"the server wants encryption first: {text}", failure=Failure.AUTH,
                           permanent=True, code=code)
    if 400 <= code < 500:
        return MailFailure(Step.AUTH, Reason.TEMPORARY, f"temporary authentication failure "
                           f"for {username}: {text}", failure=Failure.AUTH, permanent=False,
                           code=code)
    after = " (also with a freshly refreshed access token)" if refreshed else ""
    return MailFailure(Step.AUTH, Reason.APP_PASSWORD if code == 534 else Reason.AUTH_FAILED,
                       f"authentication failed for {username}{after}: {text}",
                       failure=Failure.AUTH, permanent=True, code=code)


def no_starttls(endpoint: Endpoint) -> MailFailure:
    return MailFailure(Step.TLS, Reason.NO_STARTTLS, f"{endpoint.address} does not offer "
                       "STARTTLS; use security tls for an implicit-TLS port or fix the port",
                       failure=Failure.TLS, permanent=True)


def error_failure(exc: BaseException, step: Step, doing: str, endpoint: Endpoint,
                  security: Security) -> MailFailure:
    """An exception while ``doing`` the ``step`` with ``endpoint``."""
    tls = ssl_cause(exc)
    if isinstance(tls, ssl.SSLCertVerificationError):
        return certificate_failure(tls, endpoint.address)
    if tls is not None:
        return MailFailure(Step.TLS, Reason.HANDSHAKE, f"TLS handshake with {endpoint.address} "
                           f"failed ({tls.reason or tls}); check that security {security} "
                           f"matches what port {endpoint.port} expects",
                           failure=Failure.TLS, permanent=True)
    if isinstance(exc, SMTPConnectResponseError):  # connect() read a refusing greeting
        return reply_failure(exc.code, exc.message, Step.GREETING, doing)
    if isinstance(exc, SMTPResponseException):  # a refused EHLO is SMTPHeloError anywhere
        return reply_failure(exc.code, exc.message,
                             Step.EHLO if isinstance(exc, SMTPHeloError) else step, doing)
    if isinstance(exc, SMTPConnectError | SMTPConnectTimeoutError):
        return _unreachable(exc, endpoint)
    if isinstance(exc, SMTPTimeoutError):
        return MailFailure(step, Reason.TIMEOUT, f"timed out while {doing}: {exc}",
                           failure=Failure.TIMEOUT, permanent=False)
    if isinstance(exc, SMTPServerDisconnected | ConnectionError | EOFError):
        if step == Step.TLS:
            return MailFailure(step, Reason.HANDSHAKE, f"{endpoint.address} closed the "
                               "connection during the TLS handshake", failure=Failure.TLS,
                               permanent=False)  # a hang-up, not a refusal: try again
        return MailFailure(step, Reason.CLOSED, f"connection lost while {doing} ({exc})",
                           failure=Failure.CONNECT, permanent=False)
    if isinstance(exc, OSError):
        if step == Step.TCP:
            return _unreachable(exc, endpoint)
        return MailFailure(step, Reason.CLOSED, f"connection lost while {doing} "
                           f"({describe(exc)})", failure=Failure.CONNECT, permanent=False)
    if isinstance(exc, SMTPException) and "STARTTLS" in str(exc):
        return no_starttls(endpoint)
    return MailFailure(step, Reason.UNEXPECTED, f"{endpoint.address}: {describe(exc)}",
                       failure=Failure.PROTOCOL, permanent=True)


def _unreachable(exc: BaseException, endpoint: Endpoint) -> MailFailure:
    """The connect itself failed: aiosmtplib's SMTPConnectError wraps the OSError."""
    cause = exc.__cause__ if isinstance(exc, SMTPConnectError) else exc
    if isinstance(exc, TimeoutError):
        return MailFailure(Step.TCP, Reason.TIMEOUT, f"timed out connecting ({exc})",
                           failure=Failure.TIMEOUT, permanent=False)
    if isinstance(cause, ConnectionRefusedError):
        reason = Reason.REFUSED
    elif isinstance(cause, OSError) and cause.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
        reason = Reason.NO_ROUTE
    else:
        reason = Reason.CLOSED
    if isinstance(cause, SMTPServerDisconnected):
        text = f"{endpoint.address} closed the connection without a greeting"
    else:
        text = str(exc) if isinstance(exc, SMTPConnectError) else describe(exc)
    return MailFailure(Step.TCP, reason, text, failure=Failure.CONNECT, permanent=False)
