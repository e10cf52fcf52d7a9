"""The one EWS classifier: exchangelib's exceptions and the HTTP answers around them, each
as the MailFailure the transport, the fetcher and the probe all read."""

from __future__ import annotations

import socket
import ssl

import pytest
import requests
from exchangelib import errors as ews_errors

from reconciler.mail.ews.errors import classify, response_code
from reconciler.mail.ews.http import HttpStatusError
from reconciler.mail.outcome import Failure, Outcome
from reconciler.mail.steps import Reason, Step

WHERE = "mail.corp.example:443"


def wrapped(inner: BaseException, outer: BaseException) -> BaseException:
    """``outer`` raised while handling ``inner``, as requests and exchangelib chain them."""
    try:
        try:
            raise inner
        except BaseException as exc:
            raise outer from exc
    except BaseException as exc:
        return exc


def test_a_busy_server_is_transient_with_its_back_off() -> None:
    failure = classify(ews_errors.ErrorServerBusy("try later", back_off=7.5), WHERE)
    assert (failure.step, failure.reason, failure.outcome) == (
        Step.API, Reason.TEMPORARY, Outcome.TRANSIENT)
    assert failure.retry_after == 7.5 and "7.5s" in failure.message
    assert response_code(failure) == "ErrorServerBusy"


def test_what_the_server_said_counts_inside_a_bare_transport_error() -> None:
    # exchangelib's version probe re-raises the server's answer as a bare TransportError.
    busy = ews_errors.ErrorServerBusy("busy", back_off=2.0)
    failure = classify(wrapped(busy, ews_errors.TransportError("probe failed")), WHERE)
    assert failure.retry_after == 2.0 and response_code(failure) == "ErrorServerBusy"


@pytest.mark.parametrize(("status", "failure", "reason", "permanent"), [
    (403, Failure.AUTH, Reason.PERMISSION, True),
    (404, Failure.CONFIG, Reason.REJECTED, True),
    (502, Failure.PROTOCOL, Reason.TEMPORARY, False),
    (429, Failure.PROTOCOL, Reason.TEMPORARY, False),
    (400, Failure.PROTOCOL, Reason.REJECTED, True),
])
def test_http_statuses(status: int, failure: Failure, reason: Reason, permanent: bool) -> None:
    result = classify(HttpStatusError(status, "Whatever"), WHERE)
    assert (result.failure, result.reason, result.permanent, result.code) == (
        failure, reason, permanent, status)
    assert response_code(result) is None


def test_a_refused_login_names_the_user_and_the_fix_for_its_kind() -> None:
    basic = classify(ews_errors.UnauthorizedError("401"), WHERE, username="desk")
    token = classify(ews_errors.UnauthorizedError("401"), WHERE, username="desk", oauth=True)
    assert (basic.failure, basic.reason, basic.code) == (Failure.AUTH, Reason.AUTH_FAILED, 401)
    assert "login for desk" in basic.message and "password" in basic.likely_fix
    assert "reconcile auth login" in token.likely_fix


@pytest.mark.parametrize(("exc", "step", "reason"), [
    (wrapped(socket.gaierror(-2, "Name or service not known"),
             requests.exceptions.ConnectionError("x")), Step.DNS, Reason.NXDOMAIN),
    (wrapped(ConnectionRefusedError(111, "refused"),
             requests.exceptions.ConnectionError("x")), Step.TCP, Reason.REFUSED),
    (requests.exceptions.ConnectTimeout("slow"), Step.TCP, Reason.TIMEOUT),
    # Reached, then silent or cut off: the probe's fix table reads it as a busy Exchange.
    (requests.exceptions.ReadTimeout("slow"), Step.API, Reason.TEMPORARY),
    (requests.exceptions.ChunkedEncodingError("cut"), Step.API, Reason.TEMPORARY),
    (requests.exceptions.ProxyError("no tunnel"), Step.API, Reason.REFUSED),
    (wrapped(ssl.SSLError(1, "WRONG_VERSION_NUMBER"),
             requests.exceptions.SSLError("x")), Step.TLS, Reason.HANDSHAKE),
])
def test_network_failures_say_how_far_the_call_got(exc: BaseException, step: Step,
                                                     reason: Reason) -> None:
    failure = classify(exc, WHERE)
    assert (failure.step, failure.reason, failure.permanent) == (
        step, reason, step == Step.TLS)


@pytest.mark.parametrize(("code", "failure", "reason"), [
    ("ErrorInvalidRecipients", Failure.RECIPIENTS, Reason.RECIPIENT),
    ("ErrorImpersonateUserDenied", Failure.AUTH, Reason.PERMISSION),
    ("ErrorNonExistentMailbox", Failure.CONFIG, Reason.NOT_FOUND),
    ("ErrorMessageSizeExceeded", Failure.REJECTED, Reason.REJECTED),
])
def test_response_codes_are_permanent_with_their_reason(code: str, failure: Failure,
                                                        reason: Reason) -> None:
    result = classify(getattr(ews_errors, code)("said the server"), WHERE,
                      mailbox="desk@corp.example")
    assert (result.failure, result.reason, result.permanent) == (failure, reason, True)
    assert response_code(result) == code and code in result.message


def test_anything_else_is_a_transient_unexpected_error() -> None:
    failure = classify(RuntimeError("boom"), WHERE)
    assert (failure.reason, failure.permanent) == (Reason.UNEXPECTED, False)
    assert "RuntimeError: boom" in failure.message
