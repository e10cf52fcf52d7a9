"""What an EWS failure means (SPEC O7, I7): exchangelib's exceptions, the HTTP answers
around them and Exchange's ResponseCodes, each turned into one
:class:`~reconciler.mail.failure.MailFailure` — where it failed (``step``: DNS/TCP means
the host was never reached, so the transport fails over), why (``reason``, ``failure``),
whether a retry can help, the server's back-off, and what to fix.

The transport, the fetcher and the probe all read their results from here; the table
is in ``docs/dispatch.md``.
"""

from __future__ import annotations

import socket
import ssl

import requests
from exchangelib import errors as ews_errors

from reconciler.mail.certificates import certificate_failure
from reconciler.mail.ews.http import (
    HttpStatusError,
    exception_chain,
    first_of,
    is_new_connection_error,
    short,
)
from reconciler.mail.failure import MailFailure
from reconciler.mail.outcome import Failure
from reconciler.mail.steps import Reason, Step

# EWS ResponseCodes by what they mean for the message (O7).
RECIPIENT_CODES = frozenset({
    "ErrorInvalidRecipients", "ErrorMailRecipientNotFound", "ErrorInvalidSmtpAddress",
    "ErrorRecipientNotFound",
})
AUTH_CODES = frozenset({
    "ErrorAccessDenied", "ErrorImpersonateUserDenied", "ErrorImpersonationDenied",
    "ErrorImpersonationFailed", "ErrorNoApplicableProxyCASServersAvailable",
})
TRANSIENT_CODES = frozenset({
    "ErrorServerBusy", "ErrorTimeoutExpired", "ErrorInternalServerTransientError",
    "ErrorTooManyObjectsOpened", "ErrorExceededConnectionCount", "ErrorMailboxStoreUnavailable",
    "ErrorMailboxMoveInProgress", "ErrorConnectionFailed", "ErrorSubmissionQuotaExceeded",
    "ErrorInternalServerError", "ErrorNoRespondingCASInDestinationSite",
})
NOT_FOUND_CODES = frozenset({"ErrorNonExistentMailbox", "ErrorFolderNotFound"})
CONFIG_CODES = NOT_FOUND_CODES | {"ErrorInvalidSchemaVersionForMailboxVersion"}

_CHECK_URL = "Set ewsUrl to the EWS endpoint itself, usually https://HOST/EWS/Exchange.asmx."
_RETRIED = "A later attempt may work; if it persists, Exchange's log has the reason."
_OAUTH_FIX = ("Check that the token is for EWS (scope https://outlook.office365.com/"
              "EWS.AccessAsUser.All, or full_access_as_app for app-only), that the tenant "
              "matches, and re-authorise with `reconcile auth login SERVER` if the grant was "
              "revoked.")
_PASSWORD_FIX = ("Check the username and the password the reference points to. Exchange Online "
                 "no longer accepts Basic authentication for EWS: use auth type oauth2 there. "
                 "On-premises, the account may need the domain (DOMAIN\\user or user@domain).")


def _fail(step: Step, reason: Reason, failure: Failure, message: str, fix: str = "", *,
          permanent: bool, code: int | None = None,
          retry_after: float | None = None) -> MailFailure:
    return MailFailure(step, reason, message, failure=failure, permanent=permanent, code=code,
                       retry_after=retry_after, likely_fix=fix)


def classify(exc: BaseException, where: str, *, username: str | None = None,
             oauth: bool = False, mailbox: str | None = None) -> MailFailure:
    """The one classification of an EWS error raised talking to ``where`` (host:port) for
    ``username`` (``oauth``: with a token) and ``mailbox``. The exception the verdict rests
    on is the result's ``__cause__`` (:func:`response_code` reads it)."""
    exc = _what_the_server_said(exc)
    chain = exception_chain(exc)
    failure = (_tls(chain, where) or _network(exc, chain, where)
               or _http(exc, where, username, oauth) or _answer(exc, where, mailbox))
    failure.__cause__ = exc
    return failure


def response_code(failure: MailFailure) -> str | None:
    """The EWS ResponseCode (``ErrorServerBusy``, ...) a failure was classified from."""
    name = type(failure.__cause__).__name__
    is_code = isinstance(failure.__cause__, ews_errors.EWSError) and name.startswith("Error")
    return name if is_code else None


def _what_the_server_said(exc: BaseException) -> BaseException:
    # exchangelib's version probe re-raises what the server said (busy, say) as a bare
    # TransportError; what the server said is what counts.
    if type(exc) is ews_errors.TransportError:
        inner = next((e for e in exception_chain(exc)[1:] if isinstance(e, ews_errors.EWSError)),
                     None)
        return inner if inner is not None else exc
    return exc


def _tls(chain: list[BaseException], where: str) -> MailFailure | None:
    cert = first_of(chain, ssl.SSLCertVerificationError)
    if cert is not None:
        return certificate_failure(cert, where, host_field="ewsUrl")
    tls = first_of(chain, ssl.SSLError)
    if tls is not None or any("CERTIFICATE_VERIFY_FAILED" in str(e) for e in chain):
        return _fail(Step.TLS, Reason.HANDSHAKE, Failure.TLS,
                     f"TLS handshake with {where} failed ({tls or short(chain[0])}); EWS needs "
                     "https on a port that speaks TLS", "Check the scheme and port in ewsUrl.",
                     permanent=True)
    return None


def _network(exc: BaseException, chain: list[BaseException], where: str) -> MailFailure | None:
    proxy = first_of(chain, requests.exceptions.ProxyError)
    if proxy is not None:
        return _fail(Step.API, Reason.REFUSED, Failure.CONNECT, f"the proxy did not connect "
                     f"us to {where} ({short(proxy)})", "Check the ProxyServer's host, port and "
                     "credentials.", permanent=False)
    if first_of(chain, requests.exceptions.ConnectTimeout) is not None:
        return _fail(Step.TCP, Reason.TIMEOUT, Failure.TIMEOUT, f"timed out connecting to "
                     f"{where}", "A firewall may drop the connection, or the host or port in "
                     "ewsUrl is wrong.", permanent=False)
    unresolved = first_of(chain, socket.gaierror) is not None or (
        is_new_connection_error(chain) and "resolve" in str(exc).lower())
    if unresolved:
        return _fail(Step.DNS, Reason.NXDOMAIN, Failure.CONNECT, f"{where} does not resolve",
                     "Check the host name in ewsUrl, and that this machine resolves internal "
                     "names if it is internal.", permanent=False)
    if first_of(chain, ConnectionRefusedError) is not None or is_new_connection_error(chain):
        return _fail(Step.TCP, Reason.REFUSED, Failure.CONNECT, f"connection to {where} "
                     "refused", "Check ewsUrl (host and port), that Exchange is running and "
                     "that no firewall rejects the connection.", permanent=False)
    if first_of(chain, (requests.exceptions.Timeout, TimeoutError)) is not None:
        return _fail(Step.API, Reason.TEMPORARY, Failure.TIMEOUT, f"{where} did not answer in "
                     "time", "The server may be overloaded, or a firewall drops the "
                     "connection.", permanent=False)
    lost = (requests.exceptions.ConnectionError, requests.exceptions.ChunkedEncodingError,
            ConnectionError)
    if first_of(chain, lost) is not None:
        return _fail(Step.API, Reason.TEMPORARY, Failure.CONNECT, f"connection to {where} lost",
                     _RETRIED, permanent=False)
    return None


def _http(exc: BaseException, where: str, username: str | None,
          oauth: bool) -> MailFailure | None:
    if isinstance(exc, ews_errors.UnauthorizedError):
        who = f"the login for {username}" if username else "the credentials"
        return _fail(Step.API, Reason.AUTH_FAILED, Failure.AUTH, f"{where} refused {who} "
                     "(HTTP 401)", _OAUTH_FIX if oauth else _PASSWORD_FIX, permanent=True,
                     code=401)
    if isinstance(exc, HttpStatusError):
        return _status(exc, where)
    if isinstance(exc, ews_errors.RedirectError):
        return _fail(Step.API, Reason.REJECTED, Failure.CONFIG,
                     f"{where} redirects to {exc.url}; check ewsUrl", _CHECK_URL, permanent=True)
    if isinstance(exc, ews_errors.CASError):
        return _fail(Step.API, Reason.TEMPORARY, Failure.PROTOCOL, f"{where}: Exchange front "
                     f"end error {exc.cas_error}", _RETRIED, permanent=False)
    return None


def _status(exc: HttpStatusError, where: str) -> MailFailure:
    if exc.status == 403:
        return _fail(Step.API, Reason.PERMISSION, Failure.AUTH, f"{where} answered HTTP 403 "
                     "Forbidden: the account may not use EWS", "Check that EWS access is "
                     "allowed for the account (Set-CASMailbox -EwsEnabled) and that no client "
                     "access rule blocks it.", permanent=True, code=403)
    if exc.status == 404:
        return _fail(Step.API, Reason.REJECTED, Failure.CONFIG, f"{where} has no EWS endpoint "
                     "there (HTTP 404); check ewsUrl", _CHECK_URL, permanent=True, code=404)
    transient = exc.status >= 500 or exc.status == 429
    return _fail(Step.API, Reason.TEMPORARY if transient else Reason.REJECTED,
                 Failure.PROTOCOL, f"{where} answered {exc}; check ewsUrl",
                 _RETRIED if transient else _CHECK_URL, permanent=not transient,
                 code=exc.status)


def _answer(exc: BaseException, where: str, mailbox: str | None) -> MailFailure:
    code = type(exc).__name__
    if not (isinstance(exc, ews_errors.EWSError) and code.startswith("Error")):
        if isinstance(exc, ews_errors.TransportError):
            return _fail(Step.API, Reason.REJECTED, Failure.PROTOCOL, f"{where} did not answer "
                         f"as an EWS endpoint ({short(exc)}); check ewsUrl", _CHECK_URL,
                         permanent=True)
        return _fail(Step.API, Reason.UNEXPECTED, Failure.PROTOCOL,
                     f"unexpected {code}: {short(exc)}", _RETRIED, permanent=False)
    text = f"{code}: {short(exc)}"
    if code == "ErrorServerBusy":
        back_off = getattr(exc, "back_off", None)
        wait = f"; it asked to wait {back_off:g}s" if back_off else ""
        return _fail(Step.API, Reason.TEMPORARY, Failure.REJECTED, f"{where} is busy "
                     f"({text}){wait}", "Exchange throttles EWS per account; if it lasts, "
                     "check the throttling policy that applies to it.", permanent=False,
                     retry_after=back_off)
    if code in AUTH_CODES and mailbox:
        text = f"{where} denied access to mailbox {mailbox} ({text})"
    elif code == "ErrorNonExistentMailbox" and mailbox:
        text = f"{where} has no mailbox {mailbox} ({text})"
    reason, failure, permanent, fix = _code_kind(code)
    return _fail(Step.API, reason, failure, text, fix, permanent=permanent)


def _code_kind(code: str) -> tuple[Reason, Failure, bool, str]:
    if code in RECIPIENT_CODES:
        return Reason.RECIPIENT, Failure.RECIPIENTS, True, "Check the recipients' addresses."
    if code in AUTH_CODES:
        return (Reason.PERMISSION, Failure.AUTH, True, "Give the account full access to the "
                "mailbox, or for app-only tokens the ApplicationImpersonation role (or an "
                "application access policy that includes this mailbox).")
    if code in TRANSIENT_CODES:
        return Reason.TEMPORARY, Failure.REJECTED, False, _RETRIED
    if code in NOT_FOUND_CODES:
        return (Reason.NOT_FOUND, Failure.CONFIG, True, "Check the mailbox address (email, or "
                "mailbox) and the folder path in the server's spec.")
    if code in CONFIG_CODES:
        return Reason.REJECTED, Failure.CONFIG, True, "Check the server's EWS settings."
    # Any other ResponseCode is the server refusing this message (size, send-as, quota):
    # sending the same message again gets the same answer.
    return Reason.REJECTED, Failure.REJECTED, True, ""
