"""``debug: true`` on an IMAP or POP3 server: the protocol conversation is in the log at
INFO, without the password or token; with debug off it stays below INFO."""

from __future__ import annotations

import base64
import logging

import pytest
from peers.dovecot import DovecotInstance, MailUser, sample_mail
from peers.smtp import PeerCerts

from mail.fetch_kit import fetch_all, fetch_env, incoming_server  # noqa: F401 (autouse)
from reconciler.mail.registry import fetcher_for
from reconciler.mail.threaded import xoauth2

TRACE = "reconciler.mail.trace"


def trace_lines(caplog: pytest.LogCaptureFixture, level: int = logging.INFO) -> str:
    return "\n".join(r.getMessage() for r in caplog.records
                     if r.name == TRACE and r.levelno >= level)


def secret_forms(user: str, secret: str) -> list[str]:
    return [secret, base64.b64encode(f"\0{user}\0{secret}".encode()).decode(),
            base64.b64encode(xoauth2(user, secret)).decode()]


@pytest.mark.parametrize("protocol, commands", [
    ("imaps", ["SELECT", "UID SEARCH", "UID FETCH", "* OK"]),
    ("pop3s", ["> UIDL", "> RETR 1", "< +OK"]),
])
@pytest.mark.parametrize("auth", ["basic", "oauth2"])
async def test_debug_traces_the_conversation_without_secrets(
        dovecot: DovecotInstance, mailbox: MailUser, certs: PeerCerts, protocol: str,
        commands: list[str], auth: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=TRACE)
    dovecot.deliver(mailbox, sample_mail(1))
    server = incoming_server(dovecot, mailbox, protocol, auth=auth, debug=True)
    async with fetcher_for(server, ca_file=certs.ca_file,
                           token_provider=lambda s: mailbox.token) as fetcher:
        assert len(await fetch_all(fetcher)) == 1
    text = trace_lines(caplog)
    assert "IncomingServer default/desk: " in caplog.text
    assert all(c in text for c in commands), text
    secret = mailbox.password if auth == "basic" else mailbox.token
    assert not any(form in caplog.text for form in secret_forms(mailbox.name, secret))
    assert "Request 1" not in text  # the mail itself is not traced


async def test_without_debug_the_trace_stays_below_info(
        dovecot: DovecotInstance, mailbox: MailUser, certs: PeerCerts,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger=TRACE)
    dovecot.deliver(mailbox, sample_mail(1))
    server = incoming_server(dovecot, mailbox, "imaps")
    async with fetcher_for(server, ca_file=certs.ca_file) as fetcher:
        assert len(await fetch_all(fetcher)) == 1
    assert trace_lines(caplog) == ""
    assert "UID FETCH" in trace_lines(caplog, logging.DEBUG)
    assert mailbox.password not in caplog.text
