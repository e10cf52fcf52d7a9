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

from dataclasses import KW_ONLY, dataclass

from reconciler.mail.outcome import Failure, Outcome
from reconciler.mail.steps import Reason, Step


@dataclass(eq=False, repr=False)
class MailFailure(Exception):
    """Where it failed (``step``), why (``reason``, ``failure``), and whether to retry."""

    step: Step
    reason: Reason
    message: str
    _: KW_ONLY
    failure: Failure
    permanent: bool
    retry_after: float | None = None
    code: int | None = None
    likely_fix: str = ""

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def __str__(self) -> str:  # a caller may redact ``message`` after the fact
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
