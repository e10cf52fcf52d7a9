"""Composing the RFC 5322 message: headers, encodings, Bcc, Message-ID, attachment limit (O4)."""

from __future__ import annotations

import email
from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import default as default_policy

import pytest

from reconciler.config.header_text import HeaderInjectionError
from reconciler.config.models.outgoing_server import OutgoingServer
from reconciler.config.models.recipient_filter import RecipientFilter
from reconciler.dispatch.compose import compose
from reconciler.dispatch.filters import filter_notification
from reconciler.dispatch.oversize import MIB
from reconciler.mail.envelope import Envelope, Notification

from .kit import recipient_filter, server, with_stored_sender_name

NOW = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)
SERVER = server("helpdesk", email="helpdesk@desk.example", senderName="IT Help Desk",
                replyTo="support@desk.example", attachmentLimitMB=1)


def notification(**kw: object) -> Notification:
    body: dict[str, object] = {"module": "request", "to": ["Jane Doe <jane@corp.example>"],
                               "cc": ["ops@corp.example"], "bcc": ["audit@corp.example"],
                               "subject": "Ticket ##RE-7## updated", "text_body": "Hello"}
    body.update(kw)
    return Notification.model_validate(body)


def build(
    n: Notification, srv: OutgoingServer = SERVER, recipient_filter: RecipientFilter | None = None
) -> Envelope:
    return compose(n, srv, filter_notification(n, recipient_filter), now=NOW)


def parsed(raw: bytes) -> EmailMessage:
    msg = email.message_from_bytes(raw, policy=default_policy)
    assert isinstance(msg, EmailMessage)
    return msg


def test_headers_and_envelope() -> None:
    env = build(notification(idempotency_key="re-7-updated"))
    msg = parsed(env.as_bytes())
    assert msg["From"] == "IT Help Desk <helpdesk@desk.example>"
    assert msg["Reply-To"] == "support@desk.example"
    assert msg["To"] == "Jane Doe <jane@corp.example>"
    assert msg["Cc"] == "ops@corp.example"
    assert msg["Subject"] == "Ticket ##RE-7## updated"
    assert msg["Date"] == "Wed, 04 Mar 2026 05:06:07 +0000"
    assert msg["MIME-Version"] == "1.0"
    assert env.mail_from == "helpdesk@desk.example"
    assert env.rcpt_to == ("jane@corp.example", "ops@corp.example", "audit@corp.example")
    assert env.headers["Message-ID"] == env.message_id


def test_bcc_is_never_a_header() -> None:
    env = build(notification())
    raw = env.as_bytes()
    assert b"audit@corp.example" not in raw
    assert "Bcc" not in parsed(raw)
    assert "audit@corp.example" in env.rcpt_to


@pytest.mark.parametrize("attachments", [[], [{"name": "a.txt", "data": b"x"}]])
def test_without_to_recipients_the_to_header_is_an_empty_group(attachments: list) -> None:
    env = build(notification(to=[], cc=[], bcc=["audit@corp.example"], attachments=attachments))
    raw = env.as_bytes()
    assert b"\r\nTo: undisclosed-recipients:;\r\n" in raw
    assert parsed(raw)["To"].addresses == () and env.rcpt_to == ("audit@corp.example",)


def test_non_ascii_names_and_subject_are_encoded_and_round_trip() -> None:
    srv = server("helpdesk", email="helpdesk@desk.example", senderName="Služba podpory, IT")
    n = notification(to=["Jörg Müller <joerg@corp.example>"], subject="Požadavek ##RE-9## — café")
    raw = build(n, srv).as_bytes()
    assert raw.isascii()
    head = raw.split(b"\r\n\r\n", 1)[0]
    assert b"=?utf-8?" in head
    msg = parsed(raw)
    assert msg["From"].addresses[0].display_name == "Služba podpory, IT"
    assert msg["To"].addresses[0].display_name == "Jörg Müller"
    assert msg["Subject"] == "Požadavek ##RE-9## — café"


def test_lines_end_in_crlf_and_bodies_are_7bit_clean() -> None:
    raw = build(notification(text_body="Grüße\n" + "x" * 2000, html_body="<p>Grüße</p>")).as_bytes()
    assert raw.isascii()
    assert b"\n" not in raw.replace(b"\r\n", b"")
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998


def test_message_id_uses_sender_domain_and_is_stable_per_idempotency_key() -> None:
    a = build(notification(idempotency_key="re-7"))
    b = build(notification(idempotency_key="re-7"))
    c = build(notification(idempotency_key="re-8"))
    assert a.message_id.endswith("@desk.example>") and a.message_id.startswith("<")
    assert a.message_id == b.message_id != c.message_id
    other_ns = build(notification(idempotency_key="re-7", namespace="globex"))
    assert other_ns.message_id != a.message_id
    assert build(notification()).message_id != build(notification()).message_id


def test_text_and_html_make_multipart_alternative() -> None:
    msg = parsed(build(notification(text_body="plain", html_body="<b>rich</b>")).as_bytes())
    assert msg.get_content_type() == "multipart/alternative"
    assert msg.get_body(("plain",)).get_content().strip() == "plain"
    assert msg.get_body(("html",)).get_content().split() == [
        "<html><body>", "<b>rich</b>", "</body></html>"]
    page = "<!DOCTYPE html><HTML lang=en><p>whole</p></HTML>"
    msg = parsed(build(notification(text_body="plain", html_body=page)).as_bytes())
    assert msg.get_body(("html",)).get_content().strip() == page  # a document stays as given


def test_html_only_gets_a_text_alternative_and_no_body_is_empty_text() -> None:
    html = '<p>Request <a href="https://desk.example/r/7">RE-7</a> — solved</p>'
    msg = parsed(build(notification(text_body=None, html_body=html)).as_bytes())
    assert msg.get_content_type() == "multipart/alternative"
    assert msg.get_body(("plain",)).get_content().strip() == (
        "Request RE-7 (https://desk.example/r/7) — solved")
    assert "<p>Request" in msg.get_body(("html",)).get_content()
    msg = parsed(build(notification(text_body=None)).as_bytes())
    assert msg.get_content_type() == "text/plain"


def test_attachments_are_attached_with_encoded_names() -> None:
    n = notification(attachments=[
        {"name": "zpráva.pdf", "contentType": "application/pdf", "data": b"%PDF-1.7 tiny"},
        {"name": "log.txt", "contentType": "text/plain", "data": b"line\n"},
    ])
    env = build(n)
    msg = parsed(env.as_bytes())
    assert msg.get_content_type() == "multipart/mixed"
    parts = {p.get_filename(): p for p in msg.iter_attachments()}
    assert set(parts) == {"zpráva.pdf", "log.txt"}
    assert parts["zpráva.pdf"].get_content() == b"%PDF-1.7 tiny"
    assert env.dropped_attachments == ()


def test_attachments_above_the_limit_are_dropped_and_named() -> None:
    n = notification(attachments=[
        {"name": "huge.iso", "data": b"\0" * (2 * MIB)},  # alone above the 1 MB limit
        {"name": "half-a.bin", "data": b"\0" * (MIB // 2)},
        {"name": "half-b.bin", "data": b"\0" * (MIB // 2 + 1)},  # would make the total > 1 MB
        {"name": "small.txt", "data": b"fits"},
    ])
    env = build(n)
    assert [(d.name, d.size) for d in env.dropped_attachments] == [
        ("huge.iso", 2 * MIB), ("half-b.bin", MIB // 2 + 1)]
    assert "above the limit of 1 MB" in env.dropped_attachments[0].reason
    assert "would bring the attachments to" in env.dropped_attachments[1].reason
    names = [p.get_filename() for p in parsed(env.as_bytes()).iter_attachments()]
    assert names == ["half-a.bin", "small.txt"]


def test_default_limit_is_20_mb_when_the_server_has_none() -> None:
    srv = server("plain-limit")  # attachmentLimitMB not derived in this test
    n = notification(attachments=[{"name": "big.bin", "data": b"\0" * (20 * MIB + 1)}])
    assert [d.name for d in build(n, srv).dropped_attachments] == ["big.bin"]


def test_filtered_recipients_do_not_appear_in_headers() -> None:
    f = recipient_filter("corp", "ignore", emails=["ops@corp.example"])
    env = build(notification(), recipient_filter=f)
    msg = parsed(env.as_bytes())
    assert "Cc" not in msg
    assert "ops@corp.example" not in env.rcpt_to


def test_extra_headers_pass_through() -> None:
    n = notification(headers={"In-Reply-To": "<abc@desk.example>",
                              "References": "<abc@desk.example>"})
    msg = parsed(build(n).as_bytes())
    assert msg["In-Reply-To"] == "<abc@desk.example>"


def test_no_recipients_is_refused() -> None:
    n = notification(to=[], cc=[], bcc=[])
    with pytest.raises(ValueError, match="no recipients"):
        build(n)


def test_a_line_break_in_the_configured_sender_name_is_refused() -> None:
    srv = with_stored_sender_name(server("bad"), "Desk\r\nBcc: victim@else.example")
    with pytest.raises(HeaderInjectionError, match="sender name"):
        build(notification(), srv)


# -- the fast path (plain ASCII, no attachments, written as bytes) agrees with EmailMessage --

FAST_PATH_CASES: list[dict[str, object]] = [
    {},
    {"idempotency_key": "re-7"},
    {"text_body": None, "html_body": "<p>Ticket <b>RE-7</b> was updated.</p>"},
    {"text_body": "plain\nline two\n\nthird", "html_body": "<b>rich</b>"},
    {"text_body": None},  # no body at all: an empty text/plain
    {"text_body": "x" * 300 + "\n" + "y = z  \nend\twith tab\t"},  # quoted-printable
    {"text_body": "short\r\nlines\rwith mixed\nline ends\n", "html_body": "<p>" + "w " * 200},
    {"text_body": ".leading dot\nFrom the start\n--not a boundary\n"},
    {"subject": "A rather long subject line that has to be folded because it goes on and on "
                "past seventy-eight characters, about ticket ##RE-77##"},
    {"subject": "Symbols: 100% done; (see) [x] <y> \"quoted\" back\\slash ok?"},
    {"to": [f"User Number {i} <user{i}@corp.example>" for i in range(12)],
     "cc": [f"cc{i}@corp.example" for i in range(9)]},
    {"to": ['"Doe, Jane" <jane@corp.example>', "J. R. Bob <bob@corp.example>",
            'Said "hi" <hi@corp.example>', "O'Neil <oneil@corp.example>"], "cc": []},
    {"to": [], "cc": ["only-cc@corp.example"]},
    {"headers": {"In-Reply-To": "<abc@desk.example>",
                 "References": " ".join(f"<msg-{i}@desk.example>" for i in range(10)),
                 "X-Ticket": "RE-7"}},
]


@pytest.mark.parametrize("case", range(len(FAST_PATH_CASES)))
@pytest.mark.parametrize("srv", [
    SERVER,
    server("plain", email="plain@desk.example"),
    server("dotted", email="dotted@desk.example", senderName="Desk, IT (Prague)"),
])
def test_fast_path_matches_the_email_package(
    case: int, srv: OutgoingServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    import reconciler.dispatch.compose as compose_module

    n = notification(**{"idempotency_key": f"case-{case}", **FAST_PATH_CASES[case]})
    fast = build(n, srv)
    assert isinstance(fast.content, bytes), "expected the fast path for a plain notification"
    monkeypatch.setattr(compose_module, "_plain_message", lambda *a, **kw: None)
    slow = build(n, srv)
    assert not isinstance(slow.content, bytes)

    raw = fast.as_bytes()
    assert raw.isascii()
    assert b"\n" not in raw.replace(b"\r\n", b"") and b"\r" not in raw.replace(b"\r\n", b"")
    assert raw.endswith(b"\r\n")
    head = raw.split(b"\r\n\r\n", 1)[0]
    assert max(len(line) for line in head.split(b"\r\n")) <= 78
    assert b"audit@corp.example" not in raw

    a, b = parsed(raw), parsed(slow.as_bytes())
    assert not a.defects and not b.defects
    for name in ("From", "To", "Cc", "Reply-To", "Subject", "Message-ID", "Date",
                 "MIME-Version", *n.headers):
        assert str(a[name]) == str(b[name]), name
        assert a.get_all(name, []).__len__() == b.get_all(name, []).__len__(), name
    for name in ("From", "To", "Cc", "Reply-To"):
        if name in b:
            assert ([(x.display_name, x.addr_spec) for x in a[name].addresses]
                    == [(x.display_name, x.addr_spec) for x in b[name].addresses]), name
    assert "Bcc" not in a
    assert a.get_content_type() == b.get_content_type()
    for kind in ("plain", "html"):
        pa, pb = a.get_body((kind,)), b.get_body((kind,))
        assert (pa is None) == (pb is None), kind
        if pa is not None and pb is not None:
            assert pa.get_content_type() == pb.get_content_type()
            assert pa.get_content() == pb.get_content(), kind
            assert pa["Content-Transfer-Encoding"] == pb["Content-Transfer-Encoding"], kind
    assert fast.message_id == slow.message_id
    assert fast.rcpt_to == slow.rcpt_to
    assert fast.headers["Message-ID"] == fast.message_id


@pytest.mark.parametrize("kw", [
    {"subject": "Požadavek café"},
    {"to": ["Jörg Müller <joerg@corp.example>"]},
    {"text_body": "Grüße"},
    {"html_body": "<p>€</p>"},
    {"subject": "an =?utf-8?q?encoded?= look-alike"},
    {"subject": "two  spaces"},
    {"subject": ""},
    {"attachments": [{"name": "a.txt", "data": b"x"}]},
])
def test_anything_else_takes_the_email_package_path(kw: dict[str, object]) -> None:
    env = build(notification(**kw))
    assert not isinstance(env.content, bytes)
    assert parsed(env.as_bytes())["Message-ID"] == env.message_id


@pytest.mark.parametrize("kw", [
    {"text_body": ".leading dot\n.\n..two\nbare\rcr\r\nend"},
    {"text_body": ".dot\n" + "x" * 100 + "\n", "html_body": "<p>\n.dot</p>"},
    {"text_body": ".Grüße\n.\n", "attachments": [{"name": "a.bin", "data": bytes(range(256))}]},
])
def test_both_paths_write_crlf_line_ends_only(kw: dict[str, object]) -> None:
    """SMTP DATA needs CRLF line ends; compose writes nothing else, so smtp_data only
    doubles dots and never rewrites line ends for a composed message."""
    raw = build(notification(**kw)).as_bytes()
    assert raw.count(b"\r\n") == raw.count(b"\n") == raw.count(b"\r")
