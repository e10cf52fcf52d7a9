"""A notification as the desk submits it, and the envelope a transport sends.

:class:`Notification` is the intake format (HTTP API, ``reconcile send``,
Python API; SPEC O1). It is a pydantic model because it arrives as JSON and is
stored as JSON in the outbox; validation happens once, at intake, so nothing
unsendable is ever accepted. Everything that ends up in a header is checked
for line breaks here: a CR or LF in a subject, display name or address would
let the submitter add headers of their own (header injection).

:class:`Envelope` is what :mod:`reconciler.dispatch.compose` produces from a
notification for one server, after routing and filtering. The header checks
themselves (RFC 2047 decoding included, SPEC S1) are in
:mod:`reconciler.config.header_text`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import SMTP
from functools import lru_cache
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from reconciler.config.header_text import (
    HEADER_NAME_PATTERN,
    NOT_IN_HEADERS,
    RESERVED_HEADERS,
    SERVER_HEADERS,
    check_file_name,
    check_header_name,
    check_header_text,
)
from reconciler.config.models.base import is_plain_email
from reconciler.mail.header_guard import GUARDED_SMTP

RecipientField = Literal["to", "cc", "bcc"]

# ASCII: \w is ASCII-only in the document's (ECMA 262) patterns, as in RFC 2045 tokens.
_CONTENT_TYPE = re.compile(r"^[A-Za-z0-9][\w!#$&^.+-]*/[A-Za-z0-9][\w!#$&^.+-]*$", re.ASCII)
_IDEMPOTENCY_KEY = re.compile(r"^[!-~]{1,200}$")
_NAMESPACE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_ANGLE_FORM = re.compile(r"^(?P<name>.*?)\s*<(?P<addr>[^<>]*)>\s*$", re.DOTALL)

# The same rules as JSON Schema patterns, for the API's document: a client (or a
# generator of test requests) can tell what intake refuses without sending it. The
# character classes read the same in Python and ECMA 262 regular expressions. What a
# pattern cannot say (an encoded-word that decodes to a line break) intake still refuses.
_HEADER_TEXT_PATTERN = f"^[^{NOT_IN_HEADERS}]*$"
_NON_BLANK_HEADER_TEXT_PATTERN = (f"^[^{NOT_IN_HEADERS}]*[^{NOT_IN_HEADERS}\\s]"
                                  f"[^{NOT_IN_HEADERS}]*$")


def _base64(alphabet: str) -> str:
    return (f"(?:{alphabet}{{4}})*"
            f"(?:{alphabet}[AQgw](?:==)?|{alphabet}{{2}}[AEIMQUYcgkosw048]=?)?")


# Base64 in one of its two alphabets, padding optional; the bits after the last byte
# must be 0 (what pydantic decodes).
_BASE64_PATTERN = f"^(?:{_base64('[A-Za-z0-9+/]')}|{_base64('[A-Za-z0-9_-]')})$"

# Any spelling of a header name a notification may not set, as a pattern (for the
# API's document): the composer's own, and the trace/authentication headers of servers.
_RESERVED_HEADER_PATTERN = "^(?:" + "|".join(
    "".join(f"[{c.upper()}{c}]" if c.isalpha() else c for c in name)  # letters and -
    for name in sorted(RESERVED_HEADERS | SERVER_HEADERS)) + "|[Aa][Rr][Cc]-.*)$"


def plain_error(error: Mapping[str, Any]) -> str:
    """One pydantic error as ``field.path: message``, without the input it refused
    (a stored or submitted value may be long, or private)."""
    where = ".".join(str(p) for p in error.get("loc", ()) if p != "__root__")
    message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
    return f"{where}: {message}" if where else message


def plain_errors(exc: ValidationError) -> str:
    """Every error of ``exc`` in plain words, separated by "; "."""
    return "; ".join(plain_error(e) for e in exc.errors(include_url=False))


def validate_address(value: str, what: str = "address") -> str:
    """The address in the form we send it: ASCII (IDN domains as punycode).

    Non-ASCII local parts need SMTPUTF8, which not every relay offers; they
    are refused at intake rather than failing later at one server but not another.
    """
    check_header_text(value, what)
    try:
        return _checked_address(value)
    except ValueError as exc:  # email_validator's EmailNotValidError
        raise ValueError(f"{what} {value!r} is not a valid email address: {exc}") from None


@lru_cache(maxsize=65536)  # the same senders and recipients recur in every message
def _checked_address(value: str) -> str:
    """``value`` normalised as email_validator would (the domain in lower case), via
    the regular-expression fast path for plain addresses (see ``is_plain_email``)."""
    if is_plain_email(value):
        local, domain = value.rsplit("@", 1)
        return f"{local}@{domain.lower()}"
    from email_validator import validate_email

    checked = validate_email(value, check_deliverability=False, test_environment=True,
                             allow_smtputf8=False)
    return checked.ascii_email or checked.normalized


def _unquote(name: str) -> str:
    name = name.strip()
    if len(name) >= 2 and name[0] == name[-1] == '"':
        name = re.sub(r"\\(.)", r"\1", name[1:-1])
    return name.strip()


class _Strict(BaseModel):
    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        alias_generator=to_camel,
        populate_by_name=True,
        ser_json_bytes="base64",
        val_json_bytes="base64",
    )


class Mailbox(_Strict):
    """An address with an optional display name.

    Accepts ``"jane@example.com"``, ``"Jane Doe <jane@example.com>"`` or
    ``{"email": ..., "name": ...}``.
    """

    email: Annotated[str, Field(json_schema_extra={"format": "email"})]
    name: Annotated[str | None, Field(json_schema_extra={"pattern": _HEADER_TEXT_PATTERN})] = None

    @classmethod
    def parse(cls, value: str) -> Mailbox:
        return cls.model_validate(value)

    @model_validator(mode="before")
    @classmethod
    def _from_text(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        check_header_text(value, "recipient")
        match = _ANGLE_FORM.match(value)
        if match:
            return {"email": match["addr"].strip(), "name": _unquote(match["name"]) or None}
        return {"email": value.strip()}

    @field_validator("email")
    @classmethod
    def _email(cls, value: str) -> str:
        return validate_address(value)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        if value is None:
            return None
        check_header_text(value, "display name")
        return value.strip() or None

    @property
    def key(self) -> str:
        """Identity for de-duplication and filtering: addresses compare case-insensitively."""
        return self.email.casefold()

    def __str__(self) -> str:
        return f"{self.name} <{self.email}>" if self.name else self.email


def _check_attachment_name(value: str) -> str:
    check_file_name(value, "attachment name")
    if not value.strip():
        raise ValueError("attachment name is empty")
    return value


def _check_content_type(value: str) -> str:
    if not _CONTENT_TYPE.fullmatch(value):
        raise ValueError(f"content type {value!r} is not of the form type/subtype")
    return value.lower()


class Attachment(_Strict):
    name: Annotated[str, AfterValidator(_check_attachment_name),
                    Field(json_schema_extra={"pattern": _NON_BLANK_HEADER_TEXT_PATTERN})]
    content_type: Annotated[str, AfterValidator(_check_content_type),
                            Field(json_schema_extra={"pattern": _CONTENT_TYPE.pattern})] = (
        "application/octet-stream"
    )
    data: Annotated[bytes, WithJsonSchema({"type": "string", "contentEncoding": "base64",
                                           "pattern": _BASE64_PATTERN})]

    @property
    def size(self) -> int:
        return len(self.data)

    def __repr__(self) -> str:  # the bytes are noise in logs and tracebacks
        return (f"Attachment(name={self.name!r}, content_type={self.content_type!r}, "
                f"size={self.size})")


def _check_context(value: Mapping[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, item in value.items():
        if item is None:
            continue
        if isinstance(item, bool):
            item = "true" if item else "false"
        if not isinstance(item, str | int | float):
            raise ValueError(f"context field {key!r} must be text or a number")
        out[str(key)] = str(item)
    return out


# Names and values checked one by one, so a refusal names the header (headers.X-Foo).
HeaderName = Annotated[str, AfterValidator(check_header_name)]
HeaderValue = Annotated[str, AfterValidator(lambda v: check_header_text(v, "header value"))]


def _check_namespace(value: str) -> str:
    if not _NAMESPACE.fullmatch(value):
        raise ValueError(f"namespace {value!r} is not a valid resource name")
    return value


def _check_key(value: str | None) -> str | None:
    if value is not None and not _IDEMPOTENCY_KEY.fullmatch(value):
        raise ValueError("idempotency key must be 1-200 visible ASCII characters")
    return value


_TICKET_MODULE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")
_TICKET_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$")


class TicketLink(_Strict):
    """The desk ticket a notification is about. Replies to the sent message thread to it
    by In-Reply-To/References even when their subject lost the ##RE-123## marker."""

    module: str = Field(description="request, task, change, problem, ... (the keys of "
                        "MailSettings.requestIdPrefixes).",
                        json_schema_extra={"pattern": _TICKET_MODULE.pattern})
    id: str = Field(description="The ticket number, e.g. \"123\".",
                    json_schema_extra={"pattern": _TICKET_ID.pattern})

    @field_validator("module")
    @classmethod
    def _module(cls, value: str) -> str:
        # fullmatch: with match, "$" also matched before a trailing line break
        if not _TICKET_MODULE.fullmatch(value):
            raise ValueError("ticket module must be a word of letters, digits, '-' or '_' "
                             "(e.g. request)")
        return value

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        if not _TICKET_ID.fullmatch(value):
            raise ValueError("ticket id must be 1-32 letters, digits, '.', '-' or '_'")
        # Numbers as the incoming pipeline reads them from subjects: no leading zeros.
        return str(int(value)) if value.isdigit() else value


class Notification(_Strict):
    """One notification to send (SPEC O1).

    Recipients may be empty: a template that produced no recipients is an
    audited "not sent" (O8), not an intake error.
    """

    # a word like the ticket's module: the store keeps it as text, where NUL and
    # control characters have no place (PostgreSQL text cannot hold NUL at all)
    module: Annotated[str, Field(min_length=1, max_length=64, pattern=_TICKET_MODULE.pattern)]
    namespace: Annotated[str, AfterValidator(_check_namespace),
                         Field(json_schema_extra={"pattern": _NAMESPACE.pattern})] = "default"
    context: Annotated[dict[str, Any], AfterValidator(_check_context)] = Field(
        default_factory=dict, description="Fields routing rules test: department, site, ...",
        json_schema_extra={"additionalProperties": {
            "type": ["string", "number", "boolean", "null"]}},
    )
    to: list[Mailbox] = Field(default_factory=list)
    cc: list[Mailbox] = Field(default_factory=list)
    bcc: list[Mailbox] = Field(default_factory=list)
    subject: Annotated[str, Field(json_schema_extra={"pattern": _HEADER_TEXT_PATTERN})] = ""
    text_body: str | None = None
    html_body: str | None = None
    attachments: list[Attachment] = Field(default_factory=list)
    headers: dict[HeaderName, HeaderValue] = Field(
        default_factory=dict, description="Extra headers, e.g. In-Reply-To/References.",
        json_schema_extra={
            "propertyNames": {"pattern": HEADER_NAME_PATTERN,
                              "not": {"pattern": _RESERVED_HEADER_PATTERN}},
            "additionalProperties": {"type": "string", "pattern": _HEADER_TEXT_PATTERN}},
    )
    idempotency_key: Annotated[str | None, AfterValidator(_check_key),
                               Field(json_schema_extra={"pattern": _IDEMPOTENCY_KEY.pattern})
                               ] = None
    ticket: TicketLink | None = Field(
        default=None, description="The ticket this notification is about: replies to it "
        "are threaded to that ticket by their In-Reply-To/References headers.")

    @field_validator("subject")
    @classmethod
    def _subject(cls, value: str) -> str:
        return check_header_text(value, "subject")

    def recipients(self) -> Iterator[tuple[RecipientField, Mailbox]]:
        yield from (("to", m) for m in self.to)
        yield from (("cc", m) for m in self.cc)
        yield from (("bcc", m) for m in self.bcc)


@dataclass(frozen=True, slots=True)
class DroppedAttachment:
    """An attachment left out of the message; named in the SENT audit entry (O4)."""

    name: str
    size: int
    reason: str


@dataclass(frozen=True, slots=True)
class Envelope:
    """What a transport sends: SMTP envelope plus the composed RFC 5322 message.

    ``bcc`` recipients are in the envelope (RCPT TO) but never in a header.
    ``content`` is an ``EmailMessage``, or the finished message as bytes when compose
    wrote it directly (plain ASCII, no attachments; ``message`` parses them for whoever
    wants to look). ``wire`` is the ``EmailMessage`` as compose wrote and checked it
    (SPEC S1), so no transport writes it again.
    """

    mail_from: str
    sender_name: str | None
    reply_to: str | None
    to: tuple[Mailbox, ...]
    cc: tuple[Mailbox, ...]
    bcc: tuple[Mailbox, ...]
    content: EmailMessage | bytes
    message_id: str
    dropped_attachments: tuple[DroppedAttachment, ...] = ()
    wire: bytes | None = None

    @property
    def rcpt_to(self) -> tuple[str, ...]:
        return tuple(m.email for m in (*self.to, *self.cc, *self.bcc))

    @property
    def message(self) -> EmailMessage:
        if isinstance(self.content, bytes):
            parsed = message_from_bytes(self.content, policy=SMTP)
            assert isinstance(parsed, EmailMessage)
            return parsed
        return self.content

    @property
    def headers(self) -> dict[str, str]:
        return {name: str(value) for name, value in self.message.items()}

    def as_bytes(self) -> bytes:
        if isinstance(self.content, bytes):
            return self.content
        return self.wire if self.wire is not None else self.content.as_bytes(policy=GUARDED_SMTP)


# Any line end: CRLF, a bare LF or a bare CR (the last two become CRLF).
_BARE_LINE_END = re.compile(rb"\r\n|\n|\r(?!\n)")


def smtp_data(message: bytes) -> bytes:
    """``message`` as the text of SMTP DATA (RFC 5321 4.5.2): every line ended by CRLF,
    a leading "." doubled, and the closing ``.`` line appended.

    The bytes are those aiosmtplib's ``data()`` sends for the same message, for a
    fraction of the CPU: what compose writes has CRLF line ends only, which three
    ``count`` calls confirm, so the regular expression only runs for hand-made
    content with bare CR or LF; the dots are doubled with one ``replace``.
    """
    crlf = message.count(b"\r\n")
    if message.count(b"\n") != crlf or message.count(b"\r") != crlf:
        message = _BARE_LINE_END.sub(b"\r\n", message)
    if not message.endswith(b"\r\n"):
        message += b"\r\n"
    if message.startswith(b"."):
        message = b"." + message
    return message.replace(b"\r\n.", b"\r\n..") + b".\r\n"
