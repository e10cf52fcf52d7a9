"""POP3 fetcher against a real Dovecot: TLS modes, logins, UIDL markers, optional DELE."""

from __future__ import annotations

import logging

import pytest
from peers.dovecot import DovecotInstance, MailUser, sample_mail
from peers.smtp import PeerCerts

from mail.fetch_kit import (
    fetch_all,
    fetch_delivered,
    fetch_env,  # noqa: F401  (autouse: password env, no CA env)
    incoming_server,
)
from reconciler.mail.fetcher import FetchError, FetchErrorKind, NotSupported
from reconciler.mail.registry import fetcher_for


@pytest.mark.parametrize("protocol, starttls", [("pop3s", False), ("pop3", True)])
async def test_fetches_mail_over_tls_with_uidl_markers(dovecot: DovecotInstance,
                                                       mailbox: MailUser, certs: PeerCerts,
                                                       protocol: str, starttls: bool) -> None:
    sent, mails = await fetch_delivered(dovecot, mailbox, certs.ca_file, protocol,
                                        starttls=starttls)
    assert [m.raw for m in mails] == sent
    assert all(m.marker.startswith("pop3:") and m.size == len(m.raw) for m in mails)
    assert len({m.marker for m in mails}) == 3


async def test_xoauth2_login(dovecot: DovecotInstance, mailbox: MailUser,
                             certs: PeerCerts) -> None:
    dovecot.deliver(mailbox, sample_mail(1))
    server = incoming_server(dovecot, mailbox, "pop3s", auth="oauth2")
    async with fetcher_for(server, token_provider=lambda s: mailbox.token,
                           ca_file=certs.ca_file) as fetcher:
        assert len(await fetch_all(fetcher)) == 1


async def test_refused_token_and_wrong_password_are_auth_errors_without_secrets(
        dovecot: DovecotInstance, mailbox: MailUser, certs: PeerCerts,
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    token, password = "tok-PLANTED-pop-777", "PLANTED-pop-password"
    oauth = incoming_server(dovecot, mailbox, "pop3s", auth="oauth2")
    with pytest.raises(FetchError) as refused_token:
        await fetcher_for(oauth, token_provider=lambda s: token,
                          ca_file=certs.ca_file).connect()
    monkeypatch.setenv("INCOMING_TEST_PASSWORD", password)
    basic = incoming_server(dovecot, mailbox, "pop3", starttls=True)
    with pytest.raises(FetchError) as refused_password:
        await fetcher_for(basic, ca_file=certs.ca_file).connect()
    for error, secret in ((refused_token.value, token), (refused_password.value, password)):
        assert error.kind == FetchErrorKind.AUTH
        assert f"refused the login for {mailbox.name}" in error.message
        assert secret not in error.user_text and secret not in caplog.text


async def test_markers_survive_reconnects_and_mail_stays_on_the_server(
        dovecot: DovecotInstance, mailbox: MailUser, certs: PeerCerts) -> None:
    dovecot.deliver_many(mailbox, [sample_mail(i) for i in range(3)])
    server = incoming_server(dovecot, mailbox, "pop3s")
    done: set[str] = set()
    async with fetcher_for(server, ca_file=certs.ca_file) as fetcher:
        for mail in await fetch_all(fetcher, limit=2):
            done.add(mail.marker)
            await fetcher.mark_done(mail)
    async with fetcher_for(server, ca_file=certs.ca_file) as fetcher:
        rest = await fetch_all(fetcher, done)
        assert len(rest) == 1 and rest[0].marker not in done
        done.add(rest[0].marker)
        assert await fetch_all(fetcher, done) == []
    assert dovecot.message_count(mailbox) == 3


async def test_delete_after_fetch_removes_handled_mail_only(dovecot: DovecotInstance,
                                                            mailbox: MailUser,
                                                            certs: PeerCerts) -> None:
    dovecot.deliver_many(mailbox, [sample_mail(i) for i in range(3)])
    server = incoming_server(dovecot, mailbox, "pop3s")
    fetcher = fetcher_for(server, ca_file=certs.ca_file, delete_after_fetch=True)
    async with fetcher:
        first, *_ = await fetch_all(fetcher)
        await fetcher.mark_done(first)
    assert dovecot.message_count(mailbox) == 2


async def test_new_mail_is_seen_after_wait(dovecot: DovecotInstance, mailbox: MailUser,
                                           certs: PeerCerts) -> None:
    server = incoming_server(dovecot, mailbox, "pop3s")
    async with fetcher_for(server, ca_file=certs.ca_file) as fetcher:
        assert await fetch_all(fetcher) == []
        dovecot.deliver(mailbox, sample_mail(5))
        assert await fetcher.wait_for_new(0.05) is False  # POP3 cannot be told; it polls
        assert len(await fetch_all(fetcher)) == 1


async def test_error_folder_is_not_supported(dovecot: DovecotInstance, mailbox: MailUser,
                                             certs: PeerCerts) -> None:
    dovecot.deliver(mailbox, sample_mail(1))
    server = incoming_server(dovecot, mailbox, "pop3s")
    async with fetcher_for(server, ca_file=certs.ca_file) as fetcher:
        assert fetcher.supports_error_folder is False
        (mail,) = await fetch_all(fetcher)
        with pytest.raises(NotSupported, match="no folders"):
            await fetcher.move_to_error_folder(mail)
        with pytest.raises(NotSupported):
            await fetcher.move_back_from_error_folder()
