"""IMAP fetcher against a real Dovecot: TLS modes, logins, markers, error folder, IDLE."""

from __future__ import annotations

import asyncio
import imaplib
import logging

import pytest
from peers.dovecot import DovecotInstance, MailUser, sample_mail
from peers.smtp import PeerCerts

from mail.fetch_kit import (
    fetch_all,
    fetch_delivered,
    fetch_env,  # noqa: F401  (autouse: password env, no CA env)
    incoming_server,
    subjects,
    traced_fetch,
)
from reconciler.mail.fetcher import FetchError, FetchErrorKind
from reconciler.mail.imap.fetcher import ImapFetcher
from reconciler.mail.registry import fetcher_for
from reconciler.mail.threaded import oauthbearer


@pytest.mark.parametrize("protocol, starttls", [("imaps", False), ("imap", True)])
async def test_fetches_unread_mail_over_tls(dovecot: DovecotInstance, mailbox: MailUser,
                                            certs: PeerCerts, protocol: str,
                                            starttls: bool) -> None:
    sent, mails = await fetch_delivered(dovecot, mailbox, certs.ca_file, protocol,
                                        starttls=starttls)
    assert [m.raw for m in mails] == sent
    assert all(m.size == len(m.raw) and m.folder == "INBOX" for m in mails)
    assert all(m.received_at is not None for m in mails)
    validity = mails[0].marker.split(":")[2]
    assert [m.marker for m in mails] == [f"imap:INBOX:{validity}:{uid}" for uid in (1, 2, 3)]


async def test_xoauth2_login_with_token_from_provider(dovecot: DovecotInstance,
                                                      mailbox: MailUser,
                                                      certs: PeerCerts) -> None:
    dovecot.deliver(mailbox, sample_mail(1))
    server = incoming_server(dovecot, mailbox, "imaps", auth="oauth2")
    asked: list[str] = []

    async def tokens(srv: object) -> str:
        asked.append(srv.metadata.name)
        return mailbox.token

    async with fetcher_for(server, token_provider=tokens, ca_file=certs.ca_file) as fetcher:
        assert len(await fetch_all(fetcher)) == 1
    assert asked == ["desk"]


async def test_refused_token_is_an_auth_error_without_the_token(
        dovecot: DovecotInstance, mailbox: MailUser, certs: PeerCerts,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    planted = "tok-planted-SECRET-4242"
    server = incoming_server(dovecot, mailbox, "imaps", auth="oauth2")
    fetcher = fetcher_for(server, token_provider=lambda s: planted, ca_file=certs.ca_file)
    with pytest.raises(FetchError) as caught:
        await fetcher.connect()
    error = caught.value
    assert error.kind == FetchErrorKind.AUTH
    assert mailbox.name in error.message
    assert "reconcile auth login" in error.likely_fix
    assert planted not in error.user_text and planted not in caplog.text


async def test_wrong_password_is_an_auth_error_with_a_fix(
        dovecot: DovecotInstance, mailbox: MailUser, certs: PeerCerts,
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    planted = "Wr0ng-Passw0rd-PLANTED"
    monkeypatch.setenv("INCOMING_TEST_PASSWORD", planted)
    server = incoming_server(dovecot, mailbox, "imaps")
    with pytest.raises(FetchError) as caught:
        async with fetcher_for(server, ca_file=certs.ca_file):
            pass
    error = caught.value
    assert error.kind == FetchErrorKind.AUTH
    assert f"refused the login for {mailbox.name}" in error.message
    assert "password" in error.likely_fix and "app password" in error.likely_fix
    for text in (error.user_text, repr(error), caplog.text):
        assert planted not in text


async def test_markers_keep_mail_from_being_fetched_twice_across_sessions(
        dovecot: DovecotInstance, mailbox: MailUser, certs: PeerCerts) -> None:
    dovecot.deliver_many(mailbox, [sample_mail(i) for i in range(4)])
    server = incoming_server(dovecot, mailbox, "imaps")
    done: set[str] = set()
    async with fetcher_for(server, ca_file=certs.ca_file) as first:
        for mail in await fetch_all(first, limit=2):
            done.add(mail.marker)  # durable, but the \Seen flag never reached the server
    async with fetcher_for(server, ca_file=certs.ca_file) as second:
        rest = await fetch_all(second, done)
        assert subjects(rest) == ["Request 2", "Request 3"]
        for mail in rest:
            done.add(mail.marker)
            await second.mark_done(mail)
    # a predicate works as well as a set; marked mail is not even listed any more
    async with fetcher_for(server, ca_file=certs.ca_file) as third:
        assert await fetch_all(third, lambda marker: marker in done) == []
        # without the markers, the two never flagged \Seen would come again
        assert subjects(await fetch_all(third)) == ["Request 0", "Request 1"]


async def test_mark_done_sets_seen_and_never_deletes(dovecot: DovecotInstance,
                                                     mailbox: MailUser,
                                                     certs: PeerCerts) -> None:
    dovecot.deliver_many(mailbox, [sample_mail(i) for i in range(2)])
    server = incoming_server(dovecot, mailbox, "imap", starttls=True)
    async with fetcher_for(server, ca_file=certs.ca_file) as fetcher:
        for mail in await fetch_all(fetcher):
            await fetcher.mark_done(mail)
        assert await fetch_all(fetcher) == []
    assert dovecot.message_count(mailbox) == 2
    flags = dovecot.doveadm("-f", "flow", "fetch", "-u", mailbox.name, "flags",
                            "mailbox", "INBOX", "all")
    assert flags.count("\\Seen") == 2 and flags.count("$Reconciled") == 2


async def test_uidvalidity_change_makes_old_markers_obsolete(
        dovecot: DovecotInstance, mailbox: MailUser, certs: PeerCerts) -> None:
    dovecot.deliver(mailbox, sample_mail(1))
    server = incoming_server(dovecot, mailbox, "imaps")
    async with fetcher_for(server, ca_file=certs.ca_file) as fetcher:
        before = await fetch_all(fetcher)
    done = {m.marker for m in before}
    assert isinstance(fetcher, ImapFetcher)
    dovecot.set_uidvalidity(mailbox, fetcher.uidvalidity + 1000)
    async with fetcher_for(server, ca_file=certs.ca_file) as fetcher:
        after = await fetch_all(fetcher, done)
        # the same mail again under a new marker: the pipeline's Message-ID check
        # is what stops a second ticket
        assert [m.raw for m in after] == [m.raw for m in before]
        assert after[0].marker != before[0].marker
        # a mail of the old validity is never flagged by UID: that UID may be another mail now
        await fetcher.mark_done(before[0])
        assert len(await fetch_all(fetcher)) == 1


async def test_error_folder_move_count_and_move_back(dovecot: DovecotInstance,
                                                    mailbox: MailUser,
                                                    certs: PeerCerts) -> None:
    dovecot.deliver_many(mailbox, [sample_mail(i) for i in range(3)])
    folder = "Fehler bei Empfang é"  # non-ASCII: modified UTF-7 on the wire
    server = incoming_server(dovecot, mailbox, "imaps",
                             errorFolder={"enabled": True, "name": folder})
    async with fetcher_for(server, ca_file=certs.ca_file) as fetcher:
        assert await fetcher.error_folder_count() == 0  # not created yet
        first, second, third = await fetch_all(fetcher)
        await fetcher.move_to_error_folder(first)
        await fetcher.move_to_error_folder(third)
        await fetcher.mark_done(second)
        assert await fetcher.error_folder_count() == 2
        assert await fetch_all(fetcher) == []
    assert dovecot.message_count(mailbox) == 1
    assert dovecot.message_count(mailbox, folder) == 2
    async with fetcher_for(server, ca_file=certs.ca_file) as fetcher:
        assert await fetcher.move_back_from_error_folder() == 2
        assert await fetcher.error_folder_count() == 0
        back = await fetch_all(fetcher)
        assert [m.raw for m in back] == [first.raw, third.raw]
        assert {m.marker for m in back}.isdisjoint({first.marker, third.marker})
        assert await fetcher.move_back_from_error_folder() == 0


async def test_new_mail_during_idle_wakes_the_wait(dovecot: DovecotInstance,
                                                   mailbox: MailUser,
                                                   certs: PeerCerts) -> None:
    server = incoming_server(dovecot, mailbox, "imaps")
    async with fetcher_for(server, ca_file=certs.ca_file) as fetcher:
        assert await fetch_all(fetcher) == []
        waiting = asyncio.create_task(fetcher.wait_for_new(60))
        await asyncio.sleep(0.3)
        assert not waiting.done()
        dovecot.deliver(mailbox, sample_mail(7))
        assert await asyncio.wait_for(waiting, 60) is True
        assert subjects(await fetch_all(fetcher)) == ["Request 7"]
        # without new mail the wait runs out and the session is still usable
        assert await fetcher.wait_for_new(0.5) is False
        assert await fetcher.error_folder_count() == 0


async def test_cancelled_wait_leaves_a_usable_session(dovecot: DovecotInstance,
                                                      mailbox: MailUser,
                                                      certs: PeerCerts) -> None:
    server = incoming_server(dovecot, mailbox, "imaps")
    async with fetcher_for(server, ca_file=certs.ca_file) as fetcher:
        waiting = asyncio.create_task(fetcher.wait_for_new(60))
        await asyncio.sleep(0.3)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        dovecot.deliver(mailbox, sample_mail(3))
        assert subjects(await fetch_all(fetcher)) == ["Request 3"]


async def test_two_hundred_mails_stream_one_at_a_time(dovecot: DovecotInstance,
                                                      mailbox: MailUser,
                                                      certs: PeerCerts) -> None:
    size = 20_000
    dovecot.deliver_many(mailbox, (sample_mail(i, size=size) for i in range(200)))
    server = incoming_server(dovecot, mailbox, "imaps")
    async with fetcher_for(server, ca_file=certs.ca_file) as fetcher:
        _, total, peak = await traced_fetch(fetcher)
    assert total >= 200 * size
    # a few mails in flight at most (copies in the reader and the parser), not the mailbox
    assert peak < total / 10, (peak, total)


async def test_dropped_session_is_a_connect_error_and_the_next_fetch_reconnects(
        dovecot: DovecotInstance, mailbox: MailUser, certs: PeerCerts) -> None:
    dovecot.deliver(mailbox, sample_mail(1))
    server = incoming_server(dovecot, mailbox, "imaps")
    async with fetcher_for(server, ca_file=certs.ca_file) as fetcher:
        assert len(await fetch_all(fetcher)) == 1
        dovecot.doveadm("kick", mailbox.name)  # what a server restart does to a session
        with pytest.raises(FetchError) as caught:
            await fetch_all(fetcher)
        assert caught.value.kind == FetchErrorKind.CONNECT
        assert len(await fetch_all(fetcher)) == 1


def test_oauthbearer_response_is_accepted_by_dovecot(dovecot: DovecotInstance,
                                                     mailbox: MailUser) -> None:
    # the fetcher prefers XOAUTH2; servers offering only OAUTHBEARER get this (RFC 7628)
    response = oauthbearer(mailbox.name, mailbox.token, "127.0.0.1", dovecot.imap)
    with imaplib.IMAP4("127.0.0.1", dovecot.imap) as client:
        typ, _ = client.authenticate("OAUTHBEARER",
                                     lambda challenge: b"" if challenge else response)
        assert typ == "OK"


async def test_session_dropped_during_idle_ends_the_wait_with_a_connect_error(
        dovecot: DovecotInstance, mailbox: MailUser, certs: PeerCerts) -> None:
    server = incoming_server(dovecot, mailbox, "imaps")
    async with fetcher_for(server, ca_file=certs.ca_file) as fetcher:
        waiting = asyncio.create_task(fetcher.wait_for_new(60))
        await asyncio.sleep(0.5)
        dovecot.doveadm("kick", mailbox.name)
        with pytest.raises(FetchError) as caught:
            await asyncio.wait_for(waiting, 10)
        assert caught.value.kind == FetchErrorKind.CONNECT
        dovecot.deliver(mailbox, sample_mail(5))
        assert subjects(await fetch_all(fetcher)) == ["Request 5"]  # reconnects
