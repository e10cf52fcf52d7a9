"""EWS fetcher against a real EWS SOAP endpoint over HTTPS (tests/peers/ews_server.py)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from peers.connect_proxy import ConnectProxy
from peers.dovecot import sample_mail
from peers.ews_server import EwsPeer, ews_incoming
from peers.smtp import PeerCerts, free_port
from peers.tokens import Tokens

from mail.fetch_kit import PASSWORD_ENV, connect_error, fetch_all, subjects, traced_fetch
from reconciler.config.models.proxy_server import ProxyServerSpec
from reconciler.mail.ews.fetcher import EwsFetcher
from reconciler.mail.fetcher import FetchErrorKind
from reconciler.mail.registry import fetcher_for

USER = "desk-reader"
PASSWORD = "ews-Pa55word-never-logged"
TOKEN = "eyJ0eXAi.ews-inbox-token-never-logged"
CORPUS = sorted((Path(__file__).parents[2] / "data" / "mail").glob("*.eml"))


@pytest.fixture(autouse=True)
def _password(monkeypatch: pytest.MonkeyPatch) -> None:
    """The EWS peer's password where the incoming servers' references look."""
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)


@pytest.fixture
def ews(certs: PeerCerts) -> Iterator[EwsPeer]:
    with EwsPeer(certs, user=USER, password=PASSWORD, tokens={TOKEN}) as peer:
        yield peer


def basic(password_env: str = PASSWORD_ENV) -> dict[str, Any]:
    return {"type": "basic", "username": USER, "password": {"secretRef": f"env:{password_env}"}}


def oauth(grant: str = "authorizationCode") -> dict[str, Any]:
    return {"type": "oauth2", "provider": "microsoft", "grant": grant, "clientId": "app-1",
            "tenant": "corp.example"}


def fetcher(ews: EwsPeer, certs: PeerCerts, **kwargs: Any) -> EwsFetcher:
    spec = kwargs.pop("spec", {})
    server = ews.incoming(auth=kwargs.pop("auth", basic()), **spec)
    made = fetcher_for(server, ca_file=certs.ca_file, **kwargs)
    assert isinstance(made, EwsFetcher)
    return made


# -- fetching -----------------------------------------------------------------------------


async def test_fetches_unread_mail_oldest_first_as_stored(ews: EwsPeer,
                                                          certs: PeerCerts) -> None:
    raws = [path.read_bytes() for path in CORPUS[:4]]
    ids = [ews.deliver(raw) for raw in raws]
    ews.deliver(sample_mail(99), read=True)  # already read: not the desk's business
    async with fetcher(ews, certs) as f:
        mails = await fetch_all(f)
    assert [m.raw for m in mails] == raws
    assert [m.marker for m in mails] == [f"ews:INBOX:{i}" for i in ids]
    assert all(m.size == len(m.raw) and m.folder == "INBOX" for m in mails)
    times = [m.received_at for m in mails]
    assert None not in times and times == sorted(times)  # type: ignore[type-var]
    assert {r.auth for r in ews.requests if r.status == 200} == {"basic"}
    # downloading does not mark read
    assert [i.is_read for i in ews.items()] == [False] * 4 + [True]


async def test_listing_pages_through_the_folder(ews: EwsPeer, certs: PeerCerts) -> None:
    for i in range(8):
        ews.deliver(sample_mail(i))
    async with fetcher(ews, certs) as f:
        f._page_size = 3
        mails = await fetch_all(f)
        first_five = await fetch_all(f, limit=5)
    assert subjects(mails) == [f"Request {i}" for i in range(8)]
    assert subjects(first_five) == [f"Request {i}" for i in range(5)]
    assert ews.operations().count("FindItem") >= 3 + 2


async def test_markers_are_stable_across_sessions_and_skip_done_mail(
        ews: EwsPeer, certs: PeerCerts) -> None:
    for i in range(3):
        ews.deliver(sample_mail(i))
    async with fetcher(ews, certs) as first:
        before = await fetch_all(first)
    async with fetcher(ews, certs) as second:
        again = await fetch_all(second)
        done = {before[0].marker, before[2].marker}

        async def is_done(marker: str) -> bool:  # the store's lookup is async
            return marker in done

        rest = await fetch_all(second, is_done)
    assert [m.marker for m in again] == [m.marker for m in before]
    assert [m.marker for m in rest] == [before[1].marker]


async def test_mark_done_marks_read_and_keeps_the_mail(ews: EwsPeer, certs: PeerCerts) -> None:
    for i in range(3):
        ews.deliver(sample_mail(i))
    async with fetcher(ews, certs) as f:
        mails = await fetch_all(f)
        await f.mark_done(mails[0])
    # a new session (no ChangeKey known for the marker) can still mark a mail done
    async with fetcher(ews, certs) as f:
        await f.mark_done(mails[1])
        left = await fetch_all(f)
    assert [m.marker for m in left] == [mails[2].marker]
    assert [i.is_read for i in ews.items()] == [True, True, False]
    assert "UpdateItem" in ews.operations()


async def test_named_folder_below_the_inbox(ews: EwsPeer, certs: PeerCerts) -> None:
    ews.add_folder("Support", parent="inbox")
    ews.deliver(sample_mail(1))  # the inbox itself is not fetched
    ews.deliver(sample_mail(2), "Support")
    async with fetcher(ews, certs, spec={"folder": "Inbox/Support"}) as f:
        mails = await fetch_all(f)
    assert subjects(mails) == ["Request 2"]
    assert mails[0].marker.startswith("ews:Inbox/Support:")


async def test_missing_folder_is_a_config_error_with_a_fix(ews: EwsPeer,
                                                           certs: PeerCerts) -> None:
    f = fetcher(ews, certs, spec={"folder": "Helpdesk"})
    error = await connect_error(f)
    assert error.kind == FetchErrorKind.CONFIG
    assert "Helpdesk" in str(error) and "folder" in error.likely_fix


# -- error folder (I6) ----------------------------------------------------------------------


async def test_error_folder_is_created_counted_and_emptied_back(ews: EwsPeer,
                                                                certs: PeerCerts) -> None:
    for i in range(3):
        ews.deliver(sample_mail(i))
    async with fetcher(ews, certs, spec={"errorFolder": {"enabled": True,
                                                         "name": "Desk Errors"}}) as f:
        assert await f.error_folder_count() == 0
        assert ews.items("Desk Errors") == []  # counting does not create it
        mails = await fetch_all(f)
        await f.move_to_error_folder(mails[1])
        assert await f.error_folder_count() == 1
        assert "CreateFolder" in ews.operations()
        assert subjects(await fetch_all(f)) == ["Request 0", "Request 2"]
        await f.move_to_error_folder(mails[2])  # the folder exists now: no second create
        assert ews.operations().count("CreateFolder") == 1
        assert await f.move_back_from_error_folder() == 2
        assert await f.error_folder_count() == 0
        back = await fetch_all(f)
    assert subjects(back) == ["Request 0", "Request 1", "Request 2"]
    # moved mail comes back under a new ItemId: a new marker, so retry processes it again
    assert back[1].marker != mails[1].marker and back[0].marker == mails[0].marker
    assert not any(i.is_read for i in ews.items())


# -- authentication -------------------------------------------------------------------------


async def test_oauth_bearer_from_the_token_provider(ews: EwsPeer, certs: PeerCerts) -> None:
    ews.deliver(sample_mail(1))
    tokens = Tokens(TOKEN)
    async with fetcher(ews, certs, auth=oauth(), token_provider=tokens) as f:
        assert len(await fetch_all(f)) == 1
    assert {r.auth for r in ews.requests if r.status == 200} == {"bearer"}
    assert tokens.invalidated == []


async def test_refused_token_is_refreshed_once(ews: EwsPeer, certs: PeerCerts) -> None:
    ews.deliver(sample_mail(1))
    tokens = Tokens("expired-token-0001", TOKEN)
    async with fetcher(ews, certs, auth=oauth(), token_provider=tokens) as f:
        assert len(await fetch_all(f)) == 1
    assert tokens.invalidated == ["expired-token-0001"]


async def test_token_refused_twice_is_an_auth_error(ews: EwsPeer, certs: PeerCerts,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    tokens = Tokens("revoked-token-AAAA", "revoked-token-BBBB")
    f = fetcher(ews, certs, auth=oauth(), token_provider=tokens)
    error = await connect_error(f)
    assert tokens.invalidated == ["revoked-token-AAAA"]  # one refresh, not a loop
    assert error.kind == FetchErrorKind.AUTH
    assert "reconcile auth login" in error.likely_fix
    for text in (error.user_text, caplog.text):
        assert "revoked-token" not in text


async def test_wrong_password_is_an_auth_error_without_the_password(
        ews: EwsPeer, certs: PeerCerts, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    planted = "Wr0ng-Secret-XYZZY-planted"
    monkeypatch.setenv(PASSWORD_ENV, planted)
    f = fetcher(ews, certs)
    error = await connect_error(f)
    assert error.kind == FetchErrorKind.AUTH
    assert USER in str(error) and "password" in error.likely_fix
    for text in (error.user_text, repr(error), caplog.text):
        assert planted not in text


# -- proxies ----------------------------------------------------------------------------------


async def test_fetches_through_the_proxy_the_server_names(
        ews: EwsPeer, certs: PeerCerts, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("EWS_PROXY_PASSWORD", "proxy-Secret-planted")
    ews.deliver(sample_mail(1))
    proxy = ConnectProxy()
    spec = ProxyServerSpec.model_validate({
        "type": "http", "host": "127.0.0.1", "port": proxy.port, "username": "relay",
        "password": {"secretRef": "env:EWS_PROXY_PASSWORD"}})
    try:
        async with fetcher(ews, certs, spec={"proxy": "corp-proxy"},
                           proxy_lookup=lambda server: spec) as f:
            assert len(await fetch_all(f)) == 1
    finally:
        proxy.close()
    assert proxy.tunnels and set(proxy.tunnels) == {f"localhost:{ews.port}"}
    assert "proxy-Secret-planted" not in caplog.text


async def test_unknown_proxy_is_never_bypassed(ews: EwsPeer, certs: PeerCerts) -> None:
    f = fetcher(ews, certs, spec={"proxy": "corp-proxy"})
    error = await connect_error(f)
    assert error.kind == FetchErrorKind.CONFIG and "corp-proxy" in str(error)
    assert ews.requests == []


# -- failures ---------------------------------------------------------------------------------


@pytest.mark.parametrize("operation, kind", [("FindItem", "busy"), ("GetItem", "http503")])
async def test_busy_server_is_waited_out(ews: EwsPeer, certs: PeerCerts, operation: str,
                                         kind: str) -> None:
    ews.deliver(sample_mail(1))
    # ErrorServerBusy with BackOffMilliseconds, or HTTP 503 with Retry-After
    ews.fail_next(operation, kind, back_off_ms=50, retry_after="0")
    async with fetcher(ews, certs) as f:
        assert len(await fetch_all(f)) == 1
    assert ews.operations().count(operation) == 2


async def test_untrusted_certificate_is_a_tls_error(ews: EwsPeer) -> None:
    f = fetcher_for(ews.incoming(auth=basic()))
    error = await connect_error(f)
    assert error.kind == FetchErrorKind.TLS
    assert "RECONCILE_TLS_CA_FILE" in error.likely_fix


async def test_nothing_listening_is_a_connect_error(certs: PeerCerts) -> None:
    port = free_port()
    server = ews_incoming(f"https://localhost:{port}/EWS/Exchange.asmx", auth=basic())
    f = fetcher_for(server, ca_file=certs.ca_file)
    error = await connect_error(f)
    assert error.kind == FetchErrorKind.CONNECT
    assert f"localhost:{port}" in str(error)


async def test_two_hundred_mails_stream_one_at_a_time(ews: EwsPeer, certs: PeerCerts) -> None:
    size = 100_000
    for i in range(200):
        ews.deliver(sample_mail(i, size=size))
    async with fetcher(ews, certs) as f:
        count, total, peak = await traced_fetch(f)
    assert count == 200 and total >= 200 * size
    # a few mails in flight (SOAP text, base64, bytes), not the mailbox
    assert peak < total / 10, (peak, total)


@pytest.mark.parametrize("auth", [basic(), oauth()], ids=["basic", "oauth2"])
async def test_debug_traces_each_ews_operation_without_secrets(
        ews: EwsPeer, certs: PeerCerts, auth: dict[str, Any],
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="reconciler.mail.trace")
    ews.deliver(sample_mail(1))
    async with fetcher(ews, certs, auth=auth, spec={"debug": True},
                       token_provider=Tokens(TOKEN)) as f:
        assert len(await fetch_all(f)) == 1
    lines = [r.getMessage() for r in caplog.records if r.name == "reconciler.mail.trace"]
    assert any(line.endswith("/EWS/Exchange.asmx FindItem") for line in lines), lines
    assert any("< 200 OK" in line for line in lines)
    assert PASSWORD not in caplog.text and TOKEN not in caplog.text
