"""Bounces matched to the notification they are about: one BOUNCED entry per failed
recipient, on the notification's outbox id and outgoing server, with the DSN status,
hard or soft, and the remote server's words (corpus samples 59-62, kit.SENT)."""

from __future__ import annotations

import pytest

from reconciler.incoming.pipeline.run import process
from reconciler.state.base import AuditDirection, AuditStatus

from .kit import SENT, context, mail

# file -> [(recipient, status, kind, words of the diagnostic)]
EXPECTED = {
    "59-dsn-postfix-unknown-user.eml": [
        ("nobody@bounce.test", "5.1.1", "hard", "unknown user")],
    "60-dsn-exchange-ndr.eml": [
        ("ghost@contoso.example", "5.1.10", "hard", "RESOLVER.ADR.RecipientNotFound")],
    "61-dsn-gmail-two-recipients.eml": [
        ("nosuchuser@gmail.example", "5.1.1", "hard", "does not exist"),
        ("full@gmail.example", "4.2.2", "soft", "out of storage space")],
    "62-bounce-qmail-plain-text.eml": [
        ("olduser@old.example", "5.1.1", "hard", "User unknown")],
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_a_bounce_becomes_one_bounced_entry_per_failed_recipient(name: str) -> None:
    result = process(mail(name), context(sent=SENT))
    received, *bounced = result.audit
    assert received.status == AuditStatus.RECEIVED and received.server == "support"
    notification = SENT[f"notif-00{name[:2]}@desk.acme.example"][0]
    got = []
    for entry in bounced:
        assert (entry.status, entry.direction) == (AuditStatus.BOUNCED,
                                                   AuditDirection.OUTGOING)
        assert (entry.outbox_id, entry.server, entry.message_id, entry.module) == (
            notification.outbox_id, "mailer", notification.message_id, "request")
        details = entry.details or {}
        assert details["incomingServer"] == "support"
        assert details["status"] in entry.reason and details["kind"] in entry.reason
        got.append((entry.recipient, details["status"], details["kind"], details["diagnostic"]))
    assert [g[:3] for g in got] == [e[:3] for e in EXPECTED[name]]
    for (*_, diagnostic), (*_, words) in zip(got, EXPECTED[name], strict=True):
        assert words in diagnostic


def test_a_dsn_without_the_returned_message_matches_by_its_original_message_id() -> None:
    raw = mail("61-dsn-gmail-two-recipients.eml")
    headers_only = raw[:raw.index(b"--000000000000gmail55\r\nContent-Type: message/rfc822")]
    result = process(headers_only + b"--000000000000gmail55--\r\n", context(sent=SENT))
    assert [e.recipient for e in result.audit if e.status == AuditStatus.BOUNCED] == [
        "nosuchuser@gmail.example", "full@gmail.example"]


def test_a_bounce_of_an_unknown_message_or_without_failures_stays_ignored() -> None:
    # The returned Message-ID is a notification of no one here: nothing to match.
    result = process(mail("60-dsn-exchange-ndr.eml"), context(sent={}))
    assert [a.status for a in result.audit] == [AuditStatus.RECEIVED,
                                                AuditStatus.RECEIVED_IGNORED]
    assert result.audit[-1].details == {
        "code": "delivery-report", "stage": "auto-reply",
        "original_message_ids": ["notif-0060@desk.acme.example"]}
    # A report whose recipients were all delivered is not a bounce.
    delivered = mail("59-dsn-postfix-unknown-user.eml").replace(b"Action: failed",
                                                               b"Action: delivered")
    result = process(delivered, context(sent=SENT))
    assert result.status == AuditStatus.RECEIVED_IGNORED
    assert "reports no failed recipient" in result.reason


def test_an_automatic_mail_titled_like_a_bounce_is_one_from_any_sender() -> None:
    # Exchange sends its text NDRs from a system mailbox, not MAILER-DAEMON or postmaster.
    raw = mail("62-bounce-qmail-plain-text.eml").replace(
        b"MAILER-DAEMON@mail.old.example", b"MicrosoftExchange329e71ec@contoso.example")
    titled = raw.replace(b"Subject: failure notice", b"Subject: Undeliverable: RE-56")
    automatic = titled.replace(b"Subject:", b"Auto-Submitted: auto-replied\r\nSubject:", 1)
    assert process(automatic, context(sent=SENT)).status == AuditStatus.BOUNCED
    # Without the mark of an automatic mail, the same words may be a person's.
    assert process(titled, context(sent=SENT)).status != AuditStatus.BOUNCED
