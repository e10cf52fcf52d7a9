"""The one failure type of the protocol layer.

Every protocol (``mail/smtp``, ``mail/graph``, ``mail/ews``, ``mail/imap``,
``mail/pop3``) turns whatever went wrong — a socket error, a TLS alert, an SMTP
reply, an HTTP status with a JSON or SOAP body, a refused token — into a
:class:`MailFailure` in exactly one classifier of its own. Its users never look
at protocol exceptions: dispatch reads ``outcome``/``failure``/``retry_after``
to schedule a retry, health reads ``step``/``reason`` to say which step failed
and what fixes it, incoming reads ``failure``/``likely_fix`` for its notices.

The message has been through the caller's redactor: it never holds a secret.
"""

from __future__ import annotations

from reconciler.mail.outcome import Failure, Outcome
from reconciler.mail.steps import Reason, Step


class MailFailure(Exception):
    """Where it failed (``step``), why (``reason``, ``failure``), and whether to retry."""

    def __init__(
        self,
        step: Step,
        reason: Reason,
        message: str,
        *,
        failure: Failure,
        permanent: bool,
        retry_after: float | None = None,
        code: int | None = None,
        likely_fix: str = "",
    ) -> None:
        super().__init__(message)
        self.step = step
        self.reason = reason
        self.message = message
        self.failure = failure
        self.permanent = permanent
        self.retry_after = retry_after
        self.code = code
        self.likely_fix = likely_fix

    def __str__(self) -> str:
        return self.message

    @property
    def outcome(self) -> Outcome:
        return Outcome.PERMANENT if self.permanent else Outcome.TRANSIENT

    @property
    def user_text(self) -> str:
        """Message and fix as one paragraph, for logs, notifications and the CLI."""
        return f"{self.message}. {self.likely_fix}" if self.likely_fix else self.message

    def __repr__(self) -> str:
        kind = "permanent" if self.permanent else "transient"
        return f"MailFailure({self.step}, {self.reason}, {kind}, {self.message!r})"
