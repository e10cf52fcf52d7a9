"""What a send attempt or a health probe came to, in protocol-neutral terms.

Transports translate their protocol's errors into these types so that the
worker, the audit and the retry schedule never need to know whether a message
went out over SMTP, Graph or EWS (SPEC O7, O8, O9).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum


class Outcome(StrEnum):
    SENT = "sent"  # accepted by the server for at least one recipient
    TRANSIENT = "transient"  # retry later (4xx, timeouts, connection errors)
    PERMANENT = "permanent"  # retrying cannot help (5xx, bad config, auth failure)
    IGNORED = "ignored"  # nothing was attempted because there was nothing to send


class Failure(StrEnum):
    """Why an attempt did not fully succeed; stable codes for audit and health."""

    CONNECT = "connect"  # DNS, refused, reset, closed before the greeting
    TIMEOUT = "timeout"  # a command or the whole-transaction deadline ran out
    TLS = "tls"  # handshake failed: usually the wrong security type for the port
    TLS_VERIFY = "tls-verify"  # the server's certificate is not trusted
    AUTH = "auth"  # the server refused the credentials or token
    REJECTED = "rejected"  # the server refused the transaction (MAIL/DATA reply)
    RECIPIENTS = "recipients"  # every recipient was refused
    CONFIG = "config"  # our side: missing secret, unsupported option, no token source
    PROTOCOL = "protocol"  # the server answered something we cannot use


class NotSentReason(StrEnum):
    """O8: cases where a notification is not sent at all, each an explicit SEND_FAILED."""

    NO_SERVER = "no enabled outgoing server: no rule matched and there is no enabled primary"
    SERVER_DISABLED = "the chosen outgoing server is disabled"
    SERVER_INCOMPLETE = "the chosen outgoing server's configuration is incomplete"
    NO_REPLY_TO = "the chosen outgoing server has no Reply-To address"
    NO_RECIPIENTS = "recipients list is empty"


def outcome_for_reply(code: int) -> Outcome:
    """The classification table for SMTP reply codes (Graph maps HTTP status onto it).

    2xx/3xx sent; 4xx (including 421 "closing channel") transient; 5xx permanent.
    """
    if 200 <= code < 400:
        return Outcome.SENT
    return Outcome.TRANSIENT if 400 <= code < 500 else Outcome.PERMANENT


@dataclass(frozen=True, slots=True)
class RecipientResult:
    """What the server said about one recipient."""

    address: str
    outcome: Outcome  # SENT, TRANSIENT (4xx: may be retried alone) or PERMANENT
    code: int | None = None
    reason: str = ""

    @property
    def accepted(self) -> bool:
        return self.outcome == Outcome.SENT


@dataclass(frozen=True, slots=True)
class SendResult:
    """The result of one send attempt.

    ``detail`` is for people (audit, logs) and never contains a secret.
    ``host`` is ``host:port`` of the server actually talked to, which differs
    from the configured host after a failover (O6). ``retry_after`` is the wait
    in seconds the server asked for (Graph's ``Retry-After``, Exchange's
    ``BackOffMilliseconds``) when a TRANSIENT result gives up on it: the next
    attempt is not scheduled earlier.
    """

    outcome: Outcome
    detail: str
    recipients: tuple[RecipientResult, ...] = ()
    host: str | None = None
    used_alternate: bool = False
    failure: Failure | None = None
    server_reply: str = ""  # the DATA reply; often carries the server's queue id
    retry_after: float | None = None

    @property
    def accepted(self) -> tuple[str, ...]:
        return tuple(r.address for r in self.recipients if r.accepted)

    @property
    def refused(self) -> tuple[RecipientResult, ...]:
        return tuple(r for r in self.recipients if not r.accepted)


class HealthStatus(StrEnum):
    REACHABLE = "reachable"
    UNREACHABLE = "unreachable"


@dataclass(frozen=True, slots=True)
class Health:
    """One probe of a server (O9). ``step`` names the stage that failed, for O10 hints."""

    status: HealthStatus
    host: str | None
    detail: str
    failure: Failure | None = None
    step: str | None = None  # a Step's value
    checked_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def reachable(self) -> bool:
        return self.status == HealthStatus.REACHABLE

