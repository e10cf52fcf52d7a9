"""Why a mail ended where it did: one code per audit reason.

The code goes into the audit entry's ``details["code"]`` (stable, for searching
and tests); the reason is a sentence for people. As in the seeds' two
troubleshooting tables, RECEIVED_IGNORED means "deliberately not a ticket,
nothing to fix" and PROCESSED_FAILED "someone may need to act" (a setting, a
user account, a broken mail).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from reconciler.state.base import AuditEntry, AuditStatus


class Code:
    # RECEIVED_IGNORED
    OWN_MAIL = "own-mail"
    SELF_REFERENCE = "self-reference"
    AUTO_REPLY = "auto-reply"
    DELIVERY_REPORT = "delivery-report"
    # BOUNCED (outgoing: on the notification the bounce is about)
    BOUNCED = "bounced"
    DUPLICATE = "duplicate"
    SENDER_IGNORED = "sender-ignored"
    SENDER_NOT_ALLOWED = "sender-not-allowed"
    REPLY_TO_IGNORED = "reply-to-ignored"
    REPLY_TO_NOT_ALLOWED = "reply-to-not-allowed"
    SENDER_INACTIVE = "sender-inactive"
    SPAM = "spam-filter"
    RULE_IGNORE = "rule-ignore"
    CC_DISABLED = "cc-disabled"
    BCC_DISABLED = "bcc-disabled"
    # PROCESSED_FAILED
    UNREADABLE = "unreadable"
    NO_SENDER = "no-sender"
    FORWARDED_IGNORED = "forwarded-sender-ignored"
    GUEST = "guest-not-allowed"
    OTHER_PREFIX = "other-prefix"
    COMMAND_FAILED = "command-failed"
    COMMAND_NO_TICKET = "command-without-ticket"
    EMAIL_TO_REQUEST_OFF = "email-to-request-off"
    CREATION_DISABLED = "creation-disabled"
    UNEXPECTED = "unexpected"
    # PROCESSED
    CREATED = "create"
    REPLIED = "reply"
    COMMAND = "command"
    # ATTACHMENT_PROCESSED_FAILED codes are attachments.AttachmentProblem values


@dataclass(frozen=True, slots=True)
class Verdict:
    """A stage's decision to stop here."""

    status: AuditStatus
    code: str
    reason: str
    details: Mapping[str, Any] = field(default_factory=dict)
    error_folder: bool = False  # unreadable or unexpected: a person should look at it
    # Entries written instead of the one this verdict makes (a bounce: one per recipient)
    entries: tuple[AuditEntry, ...] = ()


def ignored(code: str, reason: str, **details: Any) -> Verdict:
    return Verdict(AuditStatus.RECEIVED_IGNORED, code, reason, details)


def failed(code: str, reason: str, *, error_folder: bool = False, **details: Any) -> Verdict:
    return Verdict(AuditStatus.PROCESSED_FAILED, code, reason, details, error_folder)
