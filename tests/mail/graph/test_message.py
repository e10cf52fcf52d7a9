"""Graph's JSON message read back from both forms compose writes: the bytes fast path
(read directly, and the same as the compat32 parser reads it) and the EmailMessage path
must say the same."""

from __future__ import annotations

import dataclasses
from email import message_from_bytes
from email.policy import compat32
from typing import Any

import pytest
from dispatch.kit import server

from reconciler.dispatch.compose import compose
from reconciler.dispatch.filters import filter_notification
from reconciler.mail.envelope import Notification
from reconciler.mail.graph.message import INLINE_LIMIT, graph_message

LONG = "word " * 60 + "and a line far longer than seventy-eight characters = with an equals sign"


def message_of(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"module": "request", "to": ["jane@corp.example"],
                            "subject": "Ticket ##RE-1## " + "long subject " * 8}
    body.update(fields)
    notification = Notification.model_validate(body)
    envelope = compose(notification, server("desk"), filter_notification(notification, None))
    return graph_message(envelope).message


def test_fast_path_and_email_message_path_agree() -> None:
    fast = message_of(textBody=LONG + "\nsecond line\n", headers={"X-Ticket": "RE-1 " * 30})
    # an attachment sends compose down the EmailMessage path
    slow = message_of(textBody=LONG + "\nsecond line\n", headers={"X-Ticket": "RE-1 " * 30},
                      attachments=[{"name": "a.txt", "data": b"x"}])
    for key in ("subject", "body", "internetMessageHeaders", "toRecipients", "replyTo"):
        assert fast[key] == slow[key], key
    assert fast["body"] == {"contentType": "text", "content": LONG + "\nsecond line\n"}
    assert fast["subject"] == "Ticket ##RE-1## " + "long subject " * 8


@pytest.mark.parametrize("fields", [
    {"textBody": "hello"},
    {"textBody": ""},
    {"textBody": LONG + "\n\nsecond = line\n", "headers": {"X-Ticket": "RE-1"}},
    {"htmlBody": "<p>" + LONG + "</p>", "cc": ["Cat Lee <cat@corp.example>"]},
    {"textBody": "plain", "htmlBody": "<html><body>short</body></html>",
     "bcc": ["audit@corp.example"], "headers": {"X-A": "1", "X-B": "2"}},
    {"to": [f"Person {i} <p{i}@corp.example>" for i in range(12)], "textBody": "folded To"},
    {"textBody": "hi", "headers": {"In-Reply-To": "<a@b.example>"}},
])
def test_compose_bytes_read_directly_as_the_email_parser_reads_them(fields) -> None:
    body: dict[str, Any] = {"module": "request", "to": ["Jane Doe <jane@corp.example>"],
                            "subject": "Ticket ##RE-1##", **fields}
    notification = Notification.model_validate(body)
    envelope = compose(notification, server("desk"), filter_notification(notification, None))
    assert isinstance(envelope.content, bytes)  # compose's fast path
    parsed = dataclasses.replace(envelope,
                                 content=message_from_bytes(envelope.content, policy=compat32))
    assert graph_message(envelope) == graph_message(parsed)


def test_non_ascii_subject_and_html_body() -> None:
    message = message_of(subject="Störung behoben ✓", textBody="plain",
                         htmlBody="<p>Grüße</p>")
    assert message["subject"] == "Störung behoben ✓"
    assert message["body"] == {"contentType": "html",
                               "content": "<html><body>\n<p>Grüße</p>\n</body></html>\n"}


def test_small_attachments_ride_in_the_draft_large_ones_are_uploaded() -> None:
    body: dict[str, Any] = {"module": "request", "to": ["jane@corp.example"], "subject": "s",
                            "textBody": "t", "attachments": [
                                {"name": "big.bin", "data": b"b" * (INLINE_LIMIT + 1)},
                                {"name": "small.txt", "data": b"s" * 10}]}
    notification = Notification.model_validate(body)
    envelope = compose(notification, server("desk"), filter_notification(notification, None))
    message = graph_message(envelope)
    assert message.needs_upload
    draft, large = message.draft_body()
    assert [a["name"] for a in draft["attachments"]] == ["small.txt"]
    assert [a.name for a in large] == ["big.bin"]
