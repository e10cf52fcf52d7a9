"""MailSettings: a namespace's global mail preferences (one per namespace)."""

from __future__ import annotations

import re
from typing import Annotated, ClassVar, Literal

from pydantic import Field, StrictBool, field_validator
from pydantic_core import PydanticCustomError

from reconciler.config.models.base import (
    Email,
    Model,
    NonEmptyStr,
    Ref,
    Resource,
    delimiter_type,
)

BASE_DELIMITER_CHARS = "!@#$%^&"
BaseDelimiter = delimiter_type("baseDelimiter", BASE_DELIMITER_CHARS, 10)
# A rule's server that stays Unreachable this long hands its mail to the primary (O15).
# Five minutes is about five failed health checks at the default 60 s interval: a restart
# or a network blip of the rule's server is ridden out by retries (the rule chose that
# server for a reason: its own sender, relay or compliance), while a real outage delays a
# notification by minutes, not until someone notices.
DEFAULT_PRIMARY_FALLBACK_S = 300
_PREFIX_RE = re.compile(r"^[A-Z]{2,5}$")
# The module delimiters the desk products ship with (ServiceDesk Plus MSP's list of nine),
# so replies to any module's notification thread without extra configuration.
DEFAULT_REQUEST_ID_PREFIXES = {
    "request": "RE", "task": "TA", "solution": "SO", "purchaseOrder": "PO",
    "purchaseRequest": "PR", "contract": "CO", "change": "CH", "problem": "PB", "project": "PJ",
}


class RetrySettings(Model):
    max_attempts: int = Field(default=8, ge=1, le=100)
    initial_backoff_seconds: float = Field(default=30, gt=0, le=3600)
    max_backoff_seconds: float = Field(default=900, gt=0, le=86400)
    lifetime_minutes: int = Field(default=1440, ge=1, le=10080)


# Executables and scripts that run on a double click; a desk that needs one of them
# lists its own blockedExtensions.
DEFAULT_BLOCKED_EXTENSIONS = (
    "bat", "cmd", "com", "cpl", "dll", "exe", "hta", "jar", "js", "jse", "lnk", "msi", "msp",
    "pif", "ps1", "reg", "scr", "vbe", "vbs", "wsf", "wsh",
)


class IncomingAttachments(Model):
    """Which attachment types incoming mail may carry (SPEC I5); others are stripped."""

    blocked_extensions: list[NonEmptyStr] = Field(
        default_factory=lambda: list(DEFAULT_BLOCKED_EXTENSIONS),
        description="Extensions (without dot) stripped from incoming mail.")
    allowed_extensions: list[NonEmptyStr] = Field(
        default_factory=list,
        description="When not empty, only these extensions (without dot) are kept.")


class AdminNotifications(Model):
    """Who hears about this namespace's servers going down and coming back (SPEC O9)."""

    emails: list[Email] = Field(
        default_factory=list,
        description="Admins mailed (through the namespace's primary outgoing server, or "
        "another enabled one when the primary is the server that is down) when a server "
        "becomes Unreachable, recovers, or fails over to its alternate host and back.")


class IncomingNotices(Model):
    """The seeds' two switches for incoming-side notices (SPEC I10); both on by default."""

    connection_failures: StrictBool = Field(
        default=True, description="Notify the admins when an incoming server fails "
        "failureNotifyThreshold sessions in a row (and when it recovers).")
    stripped_attachments: StrictBool = Field(
        default=True, description="Mail the sender and the admins which attachments of "
        "their mail were stripped.")


class MailSettingsSpec(Model):
    email_to_request: StrictBool = Field(
        default=True, description="Create tickets from mail at all.")
    guest_tickets: StrictBool = Field(
        default=False, description="Senders unknown to the desk may create tickets.")
    create_from_cc: StrictBool = False
    create_from_bcc: StrictBool = False
    use_reply_to: StrictBool = Field(
        default=True, description="Treat Reply-To as the requester when present.")
    base_delimiter: BaseDelimiter = Field(
        default="##", description="Encloses request IDs in subjects.")
    request_id_prefixes: dict[str, str] = Field(
        default_factory=lambda: dict(DEFAULT_REQUEST_ID_PREFIXES),
        description="Module -> prefix used in subjects, e.g. ##RE-123##.")
    attachment_limit_mb: float = Field(default=20, gt=0, le=150, alias="attachmentLimitMB")
    incoming_attachments: IncomingAttachments = Field(default_factory=IncomingAttachments)
    retry: RetrySettings = Field(default_factory=RetrySettings)
    admin_notifications: AdminNotifications = Field(default_factory=AdminNotifications)
    incoming_notices: IncomingNotices = Field(default_factory=IncomingNotices)
    recipient_filter: Annotated[str | None, Ref("RecipientFilter")] = Field(
        default=None, description="Default recipient filter of every OutgoingServer of the "
        "namespace that names none of its own.")
    primary_fallback_after_seconds: float = Field(
        default=DEFAULT_PRIMARY_FALLBACK_S, ge=0, le=86400,
        description="Mail a rule routes to a server whose hosts have all been Unreachable "
        "this long goes through the namespace's primary instead; 0 turns this off.")

    @field_validator("request_id_prefixes")
    @classmethod
    def _prefixes(cls, value: dict[str, str]) -> dict[str, str]:
        for module, prefix in value.items():
            if not _PREFIX_RE.match(prefix):
                raise PydanticCustomError(
                    "prefix", "prefix '{prefix}' of '{module}' must be 2-5 capital letters",
                    {"prefix": prefix, "module": module})
        seen: dict[str, str] = {}
        for module, prefix in value.items():
            if prefix in seen:
                raise PydanticCustomError(
                    "prefix", "prefix '{prefix}' is used by both '{a}' and '{b}'",
                    {"prefix": prefix, "a": seen[prefix], "b": module})
            seen[prefix] = module
        return value


class MailSettings(Resource):
    KIND: ClassVar[str] = "MailSettings"
    kind: Literal["MailSettings"]
    spec: MailSettingsSpec
