"""Composition's own header guard (SPEC S1): whatever got past intake (a notification
queued before the checks, a value built in code), compose never writes a raw line
break into a header nor a line over 998 bytes, and the worker fails such a message
for good with its reason in the audit instead of sending it."""

from __future__ import annotations

import re
from collections.abc import Callable
from email import message_from_bytes
from email.header import decode_header, make_header
from email.policy import default as default_policy
from typing import Any

import pytest
from daemon.app_kit import audit_of, commit, running_worker, sent, smtp_server
from dispatch.kit import server, with_stored_sender_name
from peers.smtp import SmtpPeer

from reconciler.config.header_text import HeaderInjectionError
from reconciler.dispatch.compose import compose
from reconciler.dispatch.filters import filter_notification
from reconciler.mail.envelope import (
    Attachment,
    Mailbox,
    Notification,
)
from reconciler.mail.header_guard import wire_problem
from reconciler.state import SqlStore
from reconciler.state.base import AuditStatus, OutboxState

SERVER = server("helpdesk", email="helpdesk@desk.example", senderName="IT Help Desk")
INJECT_Q = "=?utf-8?q?x=0D=0AReply-To:_evil@attacker.example?="
INJECT_B = "=?utf-8?b?eA0KUmVwbHktVG86IGV2aWxAYXR0YWNrZXIuZXhhbXBsZQ==?="


def unchecked(**fields: Any) -> Notification:
    """A notification as it might sit in an old outbox: intake's checks never ran."""
    values: dict[str, Any] = {
        "module": "request", "namespace": "default", "context": {}, "cc": [], "bcc": [],
        "to": [Mailbox.model_construct(email="jane@corp.example", name=None)],
        "subject": "Ticket ##RE-1##", "text_body": "hello", "html_body": None,
        "attachments": [], "headers": {}, "idempotency_key": None, "ticket": None}
    values.update(fields)
    return Notification.model_construct(**values)


def build(n: Notification, srv: Any = SERVER) -> bytes:
    return compose(n, srv, filter_notification(n, None)).as_bytes()


# -- compose refuses what intake would have -----------------------------------------------

UNSAFE: list[tuple[str, Callable[[], Notification], str]] = [
    ("subject-q", lambda: unchecked(subject=INJECT_Q), "Subject"),
    ("subject-b", lambda: unchecked(subject=INJECT_B), "Subject"),
    ("subject-ends-headers", lambda: unchecked(subject="=?utf-8?q?x=0D=0A=0D=0AINJECTED?="),
     "Subject"),
    ("subject-bare-lf", lambda: unchecked(subject="=?utf-8?q?x=0AX-Evil:_1?="), "Subject"),
    ("subject-nul", lambda: unchecked(subject="=?utf-8?q?x=00y?="), "Subject"),
    ("extra-header", lambda: unchecked(headers={"X-Foo": INJECT_Q}), "X-Foo"),
    ("display-name", lambda: unchecked(to=[Mailbox.model_construct(
        email="jane@corp.example", name="Jane\r\nBcc: evil@attacker.example")]),
     "display name"),
    ("display-name-encoded", lambda: unchecked(to=[Mailbox.model_construct(
        email="jane@corp.example", name=INJECT_B)]), "display name"),
    ("attachment-name", lambda: unchecked(attachments=[Attachment.model_construct(
        name=INJECT_Q, content_type="text/plain", data=b"x")]), "Content-Disposition"),
    ("header-name-colon", lambda: unchecked(headers={"X-Foo: 1\r\nReply-To": "x"}),
     "not a valid header name"),
    ("reserved-header", lambda: unchecked(headers={"From": "evil@attacker.example"}),
     "set by the dispatcher"),
    ("trace-header", lambda: unchecked(headers={"DKIM-Signature": "v=1"}),
     "only mail servers add"),
]


@pytest.mark.parametrize(("make", "named"), [c[1:] for c in UNSAFE], ids=[c[0] for c in UNSAFE])
def test_compose_refuses_a_header_that_would_not_be_one_line(
    make: Callable[[], Notification], named: str
) -> None:
    n = make()
    with pytest.raises(ValueError) as refused:
        build(n)
    assert named in str(refused.value)
    assert "evil@attacker.example" not in str(refused.value)


def test_a_sender_name_from_the_config_is_checked_after_decoding_too() -> None:
    srv = with_stored_sender_name(server("helpdesk", email="helpdesk@desk.example"),
                                  "=?utf-8?q?Desk=0D=0ABcc:_evil@attacker.example?=")
    with pytest.raises(HeaderInjectionError, match="sender name"):
        build(unchecked(), srv)


# -- what compose writes -------------------------------------------------------------------


def _to_decoded(raw: bytes) -> str:
    """The To header as RFC 2047 decodes it (adjacent encoded-words join directly)."""
    head = raw.split(b"\r\n\r\n", 1)[0].decode("ascii")
    unfolded = re.sub(r"\r\n(?=[ \t])", "", head)
    value = next(line[3:] for line in unfolded.split("\r\n") if line.startswith("To:"))
    return str(make_header(decode_header(value.strip())))


@pytest.mark.parametrize("subject", ["plain", "Zpráva"])  # fast path and EmailMessage path
@pytest.mark.parametrize("name", [
    pytest.param("x" * 10_000, id="10000-chars"),
    pytest.param('a"b, ' * 400 + "end", id="quotes-and-commas"),
    pytest.param(", ".join(["Smith", "evil@attacker.example"] * 5), id="addresses-in-name"),
    pytest.param("Müller, Jörg (IT) " * 20 + "end", id="non-ascii-with-specials"),
])
def test_a_long_display_name_stays_one_name_on_lines_within_998_bytes(
    name: str, subject: str
) -> None:
    n = Notification.model_validate({"module": "request", "subject": subject,
                                     "to": [{"email": "jane@corp.example", "name": name}],
                                     "textBody": "hello"})
    raw = build(n)
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998
    msg = message_from_bytes(raw, policy=default_policy)
    assert [a.addr_spec for a in msg["To"].addresses] == ["jane@corp.example"]
    display, _, addr = _to_decoded(raw).rpartition(" <")
    if display.startswith('"') and display.endswith('"'):
        display = re.sub(r"\\(.)", r"\1", display[1:-1])
    assert (display, addr) == (name, "jane@corp.example>")


def test_a_10000_character_subject_is_folded_and_round_trips() -> None:
    for subject in ("s" * 10_000, "Zpráva " * 1_400):
        raw = build(Notification.model_validate({"module": "request", "subject": subject,
                                                 "to": ["jane@corp.example"]}))
        assert max(len(line) for line in raw.split(b"\r\n")) <= 998
        assert str(message_from_bytes(raw, policy=default_policy)["Subject"]) == subject


@pytest.mark.parametrize(("folded", "problem"), [
    (b"Subject: x\r\nReply-To: evil@attacker.example\r\n", "header line of its own"),
    (b"Subject: x\r\n\r\nINJECTED\r\n", "header line of its own"),
    (b"Subject: x\r\n \r\n", "blank line"),
    (b"Subject: x\nReply-To: e\r\n", "raw line break"),
    (b"Subject: x\rReply-To: e\r\n", "raw line break"),
    (b"Subject: x\x00y\r\n", "control character"),
    (b"Subject: x", "would not end its line"),
    (b"Subject: " + b"x" * 990 + b"\r\n", "longer than 998"),
    (b"Reply-To: e\r\n", "not a header name"),
])
def test_wire_problem_finds_anything_but_one_header_line(folded: bytes, problem: str) -> None:
    found = wire_problem("Subject", folded)
    assert found is not None and problem in found


def test_wire_problem_passes_a_properly_folded_header() -> None:
    assert wire_problem("Subject", b"Subject: a\r\n b\r\n\tc\r\n") is None
    assert wire_problem("Subject", b"Subject: " + b"x" * 989 + b"\r\n") is None


# -- the worker: an unsafe queued notification fails for good, unsent ----------------------

QUEUED_UNSAFE: list[tuple[str, dict[str, Any], str]] = [
    ("subject", {"subject": INJECT_Q}, "subject"),
    ("display-name", {"to": [{"email": "jane@corp.example", "name": INJECT_B}]}, "to.0.name"),
    ("extra-header", {"headers": {"X-Foo": INJECT_Q}}, "headers.X-Foo"),
    ("trace-header", {"headers": {"Received": "from evil"}}, "headers.Received.[key]"),
]


@pytest.mark.parametrize(("fields", "named"), [c[1:] for c in QUEUED_UNSAFE],
                         ids=[c[0] for c in QUEUED_UNSAFE])
async def test_an_unsafe_queued_notification_fails_with_its_reason_and_is_not_sent(
    store: SqlStore, peer_factory: Callable[..., SmtpPeer], fields: dict[str, Any],
    named: str
) -> None:
    peer = peer_factory("plain")
    commit(store, smtp_server("main", peer.port, primary=True))
    payload: dict[str, Any] = {"module": "request", "namespace": "default",
                               "to": ["jane@corp.example"], "subject": "Ticket ##RE-1##",
                               "textBody": "hello", **fields}
    # Stored as an older daemon would have stored it: no intake check on the way in.
    outbox_id = store.outbox.enqueue(payload, namespace="default", idempotency_key=None).id
    safe_payload = {**payload, "subject": "safe", "headers": {},
                    "to": ["jane@corp.example"]}
    safe = store.outbox.enqueue(safe_payload, namespace="default", idempotency_key=None).id
    async with running_worker(store):
        failed = await sent(store, outbox_id, OutboxState.FAILED)
        await sent(store, safe)
    assert failed.last_error is not None
    assert failed.last_error.startswith(f"the stored notification is not usable: {named}: ")
    assert "input_value" not in failed.last_error and "evil" not in failed.last_error
    [row] = audit_of(store, outbox_id)
    assert row.status == AuditStatus.SEND_FAILED and named in row.reason
    assert "line break" in row.reason or "only mail servers add" in row.reason
    assert [m.rcpt_tos for m in peer.messages] == [["jane@corp.example"]]  # the safe one
    assert all(b"evil@attacker.example" not in m.data for m in peer.messages)
