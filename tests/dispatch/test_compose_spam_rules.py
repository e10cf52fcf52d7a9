"""What the daemon sends passes a spam filter's structural rules (issue 14 item 7).

Every shape of notification is composed, sent through SmtpTransport to an aiosmtpd
peer, and the bytes that peer received go into one mbox that SpamAssassin checks
with its local rules only (``-L``: no DNS, no network tests). One run for the whole
batch: spamassassin takes seconds to start.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from peers.smtp import SmtpPeer

from reconciler.dispatch.compose import compose
from reconciler.dispatch.filters import filter_notification
from reconciler.mail.envelope import Notification
from reconciler.mail.outcome import Outcome
from reconciler.mail.smtp.transport import SmtpTransport

# SpamAssassin rules that judge how a message is built, not what it says or where it
# came from. A hit on any of these is a defect of the composer.
STRUCTURAL = {
    "MIME_HTML_ONLY": "HTML without a text/plain alternative",
    "MIME_HTML_MOSTLY": "the text alternative is much shorter than the HTML",
    "MPART_ALT_DIFF": "text and HTML alternatives say different things",
    "MPART_ALT_DIFF_COUNT": "the alternatives differ in how many parts they have",
    "HTML_MIME_NO_HTML_TAG": "a text/html part without an <html> element",
    "MISSING_MID": "no Message-ID",
    "MISSING_DATE": "no Date",
    "INVALID_DATE": "a Date that is not RFC 5322",
    "INVALID_MSGID": "a malformed Message-ID",
    "MISSING_HEADERS": "no To header",
    "MISSING_FROM": "no From",
    "MISSING_SUBJECT": "no Subject",
    "MISSING_MIMEOLE": "a MIME-OLE header from nobody",
    "MIME_QP_LONG_LINE": "a quoted-printable line over 76 characters",
    "MIME_BASE64_TEXT": "text sent as base64 (a spammer's way to hide words)",
    "MIME_BASE64_BLANKS": "blank lines inside base64",
    "MIME_BOUND_DIGITS_15": "a boundary like a spam tool's",
    "MIME_BAD_ISO_CHARSET": "a charset label that does not match the bytes",
    "MIME_CHARSET_FARAWAY": "a charset from far away in an English mail",
    "CHARSET_FARAWAY_HEADER": "a header in a charset from far away",
    "MISSING_MIME_HB_SEP": "no blank line between MIME headers and body",
    "MIME_HEADER_CTYPE_ONLY": "Content-Type without MIME-Version",
    "MISSING_MIME_VERSION": "MIME parts without MIME-Version",
    "BAD_ENC_HEADER": "a badly encoded header (encoded-word)",
    "SUBJ_ILLEGAL_CHARS": "raw 8-bit characters in the Subject",
    "FROM_ILLEGAL_CHARS": "raw 8-bit characters in From",
    "HEAD_ILLEGAL_CHARS": "raw 8-bit characters in headers",
    "TO_NO_BRKTS_MSFT": "a To address without angle brackets, Outlook style",
    "DATE_IN_FUTURE_03_06": "a Date hours ahead",
    "DATE_IN_PAST_03_06": "a Date hours behind",
    "EMPTY_MESSAGE": "no body at all",
    "HTML_SHORT_LENGTH": "only a few bytes of HTML",
}
# Whole families of such rules, for ones added to SpamAssassin after this list was made.
STRUCTURAL_PREFIXES = ("TVD_", "MIME_", "MPART_", "HTML_MIME_", "BAD_ENC")


def notifications() -> dict[str, dict[str, Any]]:
    long_line = "Zeile mit Umlauten äöü " * 20
    html = ('<p>Hello Jane,</p><p>your request <a href="https://desk.example/r/7">RE-7 '
            "</a> about the <b>printer on the third floor</b> was updated by the "
            "technician.</p><ul><li>Status: resolved</li><li>Due: Monday</li></ul>"
            "<p>Reply to this mail to reopen it.</p>")
    text = ("Hello Jane,\n\nyour request RE-7 about the printer on the third floor was "
            "updated by the technician.\n\n- Status: resolved\n- Due: Monday\n\n"
            "Reply to this mail to reopen it.\n")
    pdf = b"%PDF-1.4\n" + bytes(range(256)) * 8
    return {
        "text": {"text_body": text},
        "html-only": {"text_body": None, "html_body": html},
        "text-and-html": {"text_body": text, "html_body": html},
        "html-document": {"text_body": None,
                          "html_body": f"<!DOCTYPE html><html><head><title>RE-7</title>"
                                       f"</head><body>{html}</body></html>"},
        "non-ascii": {"subject": "Požadavek ##RE-9## — vyřešeno ✓",
                      "to": ["Jörg Müller <joerg@corp.example>"],
                      "text_body": "Dobrý den,\n\nváš požadavek byl vyřešen. Grüße, 你好\n"},
        "non-ascii-html-only": {"subject": "Störung behoben", "text_body": None,
                                "html_body": "<p>Grüße aus dem Service Desk — "
                                             "die Störung ist behoben.</p>" * 3},
        "long-lines": {"text_body": long_line + "\n" + "x" * 1200 + "\n",
                       "html_body": f"<p>{long_line}</p><p>{'y' * 1200}</p>"},
        "attachments": {"text_body": text, "attachments": [
            {"name": "report.pdf", "contentType": "application/pdf", "data": pdf},
            {"name": "log.txt", "contentType": "text/plain", "data": b"line one\nline two\n"}]},
        "non-ascii-attachment-names": {"text_body": text, "html_body": html, "attachments": [
            {"name": "Übersicht März.pdf", "contentType": "application/pdf", "data": pdf},
            {"name": "报告.txt", "contentType": "text/plain",
             "data": "第一行\n".encode()}]},
        "long-subjects": {"subject": "Požadavek ##RE-9## " + "velmi dlouhý předmět " * 12,
                          "text_body": text, "headers": {"X-Note": "long ascii text " * 20}},
        "non-ascii-sender": {"text_body": text},  # sent by a server with a non-ASCII name
        "cc-only": {"to": [], "cc": ["ops@corp.example"], "text_body": text},
        "bcc-only": {"to": [], "bcc": ["audit@corp.example"], "text_body": text},
        "extra-headers": {"text_body": text, "headers": {"X-Ticket": "RE-7"},
                          "idempotency_key": "re-7-updated"},
    }


def spamassassin_hits(mbox: Path) -> dict[str, set[str]]:
    """Message-ID -> the rules that message of ``mbox`` hit, local tests only."""
    spamassassin = shutil.which("spamassassin")
    assert spamassassin, "install Debian's spamassassin (.ci/run does)"
    # HOME in the test's directory: Bayes auto-learning must not write to the real one.
    out = subprocess.run([spamassassin, "-L", "--mbox", "-x", str(mbox)], capture_output=True,
                         check=True, timeout=300, env=os.environ | {"HOME": str(mbox.parent)},
                         ).stdout.decode("utf-8", "replace")
    hits = {}
    for message in re.split(r"^From .*\n", out, flags=re.MULTILINE)[1:]:
        head = re.sub(r"\n[ \t]+", " ", message.split("\n\n", 1)[0])
        rules = re.search(r"^X-Spam-Status: .*?tests=(\S*)", head, re.MULTILINE)
        assert rules, head
        hits[re.search(r"^Message-ID: (\S+)", head, re.MULTILINE | re.IGNORECASE)[1]] = (
            set(rules[1].split(",")) - {"none", ""})
    return hits


async def test_no_notification_shape_trips_a_structural_spam_rule(
        peer_factory: Callable[..., SmtpPeer], tmp_path: Path) -> None:
    peer = peer_factory("plain")
    servers = {"non-ascii-sender": peer.server("cz", senderName="Služba podpory, IT")}
    sender = SmtpTransport(local_hostname="client.test")
    shapes = {}
    try:
        for shape, fields in notifications().items():
            notification = Notification.model_validate(
                {"module": "request", "to": ["Jane Doe <jane@corp.example>"],
                 "subject": "Ticket ##RE-7## updated"} | fields)
            server = servers.get(shape) or peer.server()
            envelope = compose(notification, server, filter_notification(notification, None))
            result = await sender.send(envelope, server)
            assert result.outcome == Outcome.SENT, result.detail
            shapes[envelope.message_id] = shape
    finally:
        await sender.aclose()
    received = [m.data for m in peer.messages]
    stamp = time.asctime(time.gmtime()).encode()  # the mbox "From " line's date format
    mbox = tmp_path / "sent.mbox"
    mbox.write_bytes(b"".join(
        b"From helpdesk@desk.example " + stamp + b"\n" + data.replace(b"\r\n", b"\n") + b"\n"
        for data in received))
    hits = spamassassin_hits(mbox)
    assert hits.keys() == shapes.keys()
    by_shape = {shapes[mid]: rules for mid, rules in hits.items()}
    assert "HTML_MESSAGE" in by_shape["html-only"]  # the rules ran (an informational one)
    found = {shape: sorted(rule for rule in rules
                           if rule in STRUCTURAL or rule.startswith(STRUCTURAL_PREFIXES))
             for shape, rules in by_shape.items()}
    assert {shape: rules for shape, rules in found.items() if rules} == {}
