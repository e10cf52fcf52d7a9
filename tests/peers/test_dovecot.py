"""The Dovecot peer itself: it starts with every listener, logs users in, and leaves nothing."""

from __future__ import annotations

import imaplib
import socket
import ssl

import pytest

from peers.dovecot import DovecotInstance, MailUser, sample_mail
from peers.smtp import PeerCerts


def test_session_instance_serves_all_four_listeners(dovecot: DovecotInstance,
                                                    mailbox: MailUser,
                                                    certs: PeerCerts) -> None:
    dovecot.deliver(mailbox, sample_mail(1))
    context = ssl.create_default_context(cafile=str(certs.ca_file))
    with imaplib.IMAP4_SSL("127.0.0.1", dovecot.imaps, ssl_context=context) as client:
        client.login(mailbox.name, mailbox.password)
        assert client.select("INBOX") == ("OK", [b"1"])
    for port in (dovecot.imap, dovecot.pop3, dovecot.pop3s):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    assert dovecot.message_count(mailbox) == 1


def test_unknown_token_and_revoked_token_are_refused(dovecot: DovecotInstance,
                                                     mailbox: MailUser) -> None:
    def xoauth2(token: str) -> None:
        with imaplib.IMAP4("127.0.0.1", dovecot.imap) as client:
            client.authenticate("XOAUTH2", lambda challenge: b"" if challenge else
                                f"user={mailbox.name}\x01auth=Bearer {token}\x01\x01".encode())

    xoauth2(mailbox.token)
    with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
        xoauth2("tok-nobody-issued-this")
    dovecot.revoke_token(mailbox)
    with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
        xoauth2(mailbox.token)


def test_stop_ends_the_server_and_removes_its_directory() -> None:
    instance = DovecotInstance().start()
    root, port = instance.root, instance.imap
    assert instance.running
    instance.stop()
    assert not instance.running and not root.exists()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
