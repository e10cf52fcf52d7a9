"""What an EWS failure means for the message (SPEC O7): exchangelib's exceptions, the
HTTP answers around them and Exchange's ResponseCodes, each turned into a
:class:`Verdict` (outcome, failure, a reason that says what to fix, and whether the
host was reached at all, asked for a back-off or may have sent the message).

The EWS transport, its health probe and the table in ``docs/dispatch.md`` read from here.
"""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass

import requests
from exchangelib import errors as ews_errors

from reconciler.mail.ews.session import HttpStatusError
from reconciler.mail.ews.session import exception_chain as _chain
from reconciler.mail.ews.session import first_of as _first
from reconciler.mail.ews.session import (
    is_new_connection_error as _is_new_connection_error,
)
from reconciler.mail.ews.session import short as _short
from reconciler.mail.outcome import Failure, Outcome

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
CONFIG_CODES = frozenset({"ErrorNonExistentMailbox", "ErrorInvalidSchemaVersionForMailboxVersion"})


@dataclass(frozen=True)
class Verdict:
    """What an exchangelib exception means (O7)."""

    outcome: Outcome
    failure: Failure
    detail: str
    code: str | None = None  # the EWS ResponseCode, or HTTP status as text
    unreachable: bool = False  # the host was not reached at all: try the alternate
    back_off: float | None = None  # the server asked to wait this long (busy)
    auth_refused: bool = False  # HTTP 401: a new OAuth token may help
    maybe_sent: bool = False  # the request may have been processed
    tls_reason: str | None = None  # untrusted | hostname-mismatch | expired | handshake


def classify(exc: BaseException, where: str) -> Verdict:
    chain = _chain(exc)
    cert = _first(chain, ssl.SSLCertVerificationError)
    if cert is not None:
        message = cert.verify_message or cert.reason or str(cert)
        reason = {62: "hostname-mismatch", 64: "hostname-mismatch",
                  10: "expired"}.get(cert.verify_code or 0, "untrusted")
        what = {"hostname-mismatch": "is for another host name",
                "expired": "has expired"}.get(reason, "is not trusted")
        return Verdict(Outcome.PERMANENT, Failure.TLS_VERIFY,
                       f"TLS certificate of {where} {what} ({message})", tls_reason=reason)
    tls = _first(chain, ssl.SSLError)
    if tls is not None or "CERTIFICATE_VERIFY_FAILED" in str(exc):
        return Verdict(Outcome.PERMANENT, Failure.TLS,
                       f"TLS handshake with {where} failed ({tls or exc}); EWS needs https on "
                       "a port that speaks TLS", tls_reason="handshake")
    proxy = _first(chain, requests.exceptions.ProxyError)
    if proxy is not None:
        return Verdict(Outcome.TRANSIENT, Failure.CONNECT,
                       f"the proxy did not connect us to {where} ({_short(proxy)})")
    if _first(chain, requests.exceptions.ConnectTimeout) is not None:
        return Verdict(Outcome.TRANSIENT, Failure.TIMEOUT, f"timed out connecting to {where}",
                       unreachable=True)
    refused = _first(chain, (ConnectionRefusedError, socket.gaierror))
    if refused is not None or _is_new_connection_error(chain):
        text = (f"{where} does not resolve" if isinstance(refused, socket.gaierror)
                or "resolve" in str(exc).lower() else f"connection to {where} refused")
        return Verdict(Outcome.TRANSIENT, Failure.CONNECT, text, unreachable=True)
    if _first(chain, (requests.exceptions.ReadTimeout, TimeoutError)) is not None:
        return Verdict(Outcome.TRANSIENT, Failure.TIMEOUT, f"{where} did not answer in time",
                       maybe_sent=True)
    if _first(chain, (requests.exceptions.ConnectionError,
                      requests.exceptions.ChunkedEncodingError, ConnectionError)) is not None:
        return Verdict(Outcome.TRANSIENT, Failure.CONNECT, f"connection to {where} lost",
                       maybe_sent=True)
    if isinstance(exc, ews_errors.UnauthorizedError):
        return Verdict(Outcome.PERMANENT, Failure.AUTH, f"{where} refused the credentials "
                       "(HTTP 401)", code="401", auth_refused=True)
    if isinstance(exc, HttpStatusError):
        if exc.status == 403:
            return Verdict(Outcome.PERMANENT, Failure.AUTH, f"{where} answered HTTP 403 "
                           "Forbidden: the account may not use EWS", code="403")
        outcome = Outcome.TRANSIENT if exc.status >= 500 or exc.status == 429 \
            else Outcome.PERMANENT
        return Verdict(outcome, Failure.PROTOCOL, f"{where} answered {exc}; check ewsUrl",
                       code=str(exc.status))
    if isinstance(exc, ews_errors.RedirectError):
        return Verdict(Outcome.PERMANENT, Failure.CONFIG, f"{where} redirects to {exc.url}; "
                       "set ewsUrl to the EWS endpoint itself")
    if isinstance(exc, ews_errors.CASError):
        return Verdict(Outcome.TRANSIENT, Failure.PROTOCOL, f"{where}: Exchange front end "
                       f"error {exc.cas_error}")
    if isinstance(exc, ews_errors.ResponseMessageError | ews_errors.EWSError) \
            and type(exc).__name__.startswith("Error"):
        return _response_code(exc, where)
    if type(exc) is ews_errors.TransportError:
        # exchangelib's version probe re-raises what the server said (busy, say) as a
        # bare TransportError; what the server said is what counts.
        inner = next((e for e in chain[1:] if isinstance(e, ews_errors.EWSError)), None)
        if inner is not None:
            return classify(inner, where)
    if isinstance(exc, ews_errors.TransportError):
        return Verdict(Outcome.PERMANENT, Failure.PROTOCOL, f"{where} did not answer as an "
                       f"EWS endpoint ({_short(exc)}); check ewsUrl")
    return Verdict(Outcome.TRANSIENT, Failure.PROTOCOL,
                   f"unexpected {type(exc).__name__}: {_short(exc)}")


def _response_code(exc: BaseException, where: str) -> Verdict:
    code = type(exc).__name__
    text = f"{code}: {_short(exc)}"
    if code == "ErrorServerBusy":
        back_off = getattr(exc, "back_off", None)
        wait = f"; it asked to wait {back_off:g}s" if back_off else ""
        return Verdict(Outcome.TRANSIENT, Failure.REJECTED, f"{where} is busy ({text}){wait}",
                       code, back_off=back_off)
    if code in RECIPIENT_CODES:
        return Verdict(Outcome.PERMANENT, Failure.RECIPIENTS, text, code)
    if code in AUTH_CODES:
        return Verdict(Outcome.PERMANENT, Failure.AUTH, text, code)
    if code in TRANSIENT_CODES:
        return Verdict(Outcome.TRANSIENT, Failure.REJECTED, text, code)
    if code in CONFIG_CODES:
        return Verdict(Outcome.PERMANENT, Failure.CONFIG, text, code)
    # Any other ResponseCode is the server refusing this message (size, send-as, quota):
    # sending the same message again gets the same answer.
    return Verdict(Outcome.PERMANENT, Failure.REJECTED, text, code)


class EwsFailed(Exception):
    """An EWS step failed for a reason already classified."""

    def __init__(self, verdict: Verdict) -> None:
        super().__init__(verdict.detail)
        self.verdict = verdict
