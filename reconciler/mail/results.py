"""What every transport's ``send`` does with its result, whatever the protocol: refuse
what it cannot send before touching the network, give each recipient the message's
outcome, log the result in one format, and turn a bug into a redacted, transient result.
"""

from __future__ import annotations

import logging
import traceback

from reconciler.config.models.outgoing_server import OutgoingProtocol, OutgoingServer
from reconciler.mail.envelope import Envelope
from reconciler.mail.outcome import Failure, Outcome, RecipientResult, SendResult
from reconciler.mail.transport import Redactor


def config_result(detail: str) -> SendResult:
    return SendResult(Outcome.PERMANENT, detail, failure=Failure.CONFIG)


def unsendable(envelope: Envelope, server: OutgoingServer, protocol: OutgoingProtocol,
               name: str) -> SendResult | None:
    """The result for a server of another protocol or a message without recipients;
    None when the send can go ahead. ``name`` is the protocol as a reader knows it."""
    if server.spec.protocol != protocol:
        return config_result(f"server {server.metadata.name} does not use {name}")
    if not envelope.rcpt_to:
        return SendResult(Outcome.IGNORED, "no recipients; nothing was sent")
    return None


def every_recipient(envelope: Envelope, outcome: Outcome, code: int | None = None,
                    reason: str = "") -> tuple[RecipientResult, ...]:
    """The same outcome for each recipient: for protocols (and failures) that answer for
    the whole message rather than per address."""
    return tuple(RecipientResult(a, outcome, code, reason) for a in envelope.rcpt_to)


def logged_result(
    log: logging.Logger,
    envelope: Envelope,
    server: OutgoingServer,
    redactor: Redactor,
    outcome: Outcome,
    failure: Failure | None,
    detail: str,
    *,
    recipients: tuple[RecipientResult, ...] = (),
    code: int | None = None,
    server_reply: str = "",
    host: str | None = None,
    used_alternate: bool = False,
    retry_after: float | None = None,
) -> SendResult:
    """The attempt's result, its texts through ``redactor``, logged in the one format of
    every transport. A failure with no per-recipient answers counts for every recipient."""
    if not recipients and outcome != Outcome.SENT:
        recipients = every_recipient(envelope, outcome, code)
    result = SendResult(outcome=outcome, detail=redactor(detail), recipients=recipients,
                        host=host, used_alternate=used_alternate, failure=failure,
                        server_reply=redactor(server_reply), retry_after=retry_after)
    level = logging.INFO if outcome == Outcome.SENT else logging.WARNING
    log.log(level, "%s %s via %s (%s): %s", envelope.message_id, outcome, result.host,
            server.display, result.detail)
    return result


def log_unexpected(log: logging.Logger, server: OutgoingServer, exc: BaseException,
                   redactor: Redactor) -> None:
    # A bug or an unforeseen library error is still a result (transient: a later
    # attempt may well work), and its traceback goes through the redactor.
    log.error("unexpected error sending via %s: %s", server.display,
              redactor("".join(traceback.format_exception(exc))))


def describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
