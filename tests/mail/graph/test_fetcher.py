"""Graph fetcher against the local Microsoft Graph over HTTPS (tests/peers/graph_server.py
with the mailbox routes of tests/peers/graph_mailbox.py)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from peers.connect_proxy import ConnectProxy
from peers.dovecot import sample_mail
from peers.graph_server import TOKEN, GraphPeer
from peers.smtp import PeerCerts
from peers.tokens import Tokens

from mail.fetch_kit import connect_error, fetch_all, subjects, traced_fetch
from reconciler.config.models.incoming_server import IncomingServer
from reconciler.config.models.proxy_server import ProxyServerSpec
from reconciler.mail.fetcher import FetchError, FetchErrorKind
from reconciler.mail.graph.fetcher import GraphFetcher
from reconciler.mail.registry import fetcher_for
from reconciler.oauth.source import TokenError

DESK = "desk@corp.example"
CORPUS = sorted((Path(__file__).parents[2] / "data" / "mail").glob("*.eml"))


@pytest.fixture
def graph(certs: PeerCerts) -> Iterator[GraphPeer]:
    with GraphPeer(certs, mailboxes=(DESK, "other@corp.example"),
                   forbidden=("other@corp.example",)) as peer:
        yield peer


def incoming(graph: GraphPeer, email_address: str = DESK, **spec: Any) -> IncomingServer:
    body: dict[str, Any] = {
        "email": email_address, "protocol": "graph", "graphEndpoint": graph.endpoint,
        "auth": {"type": "oauth2", "provider": "microsoft", "grant": "clientCredentials",
                 "clientId": "11111111-2222-3333-4444-555555555555", "tenant": "corp"}}
    body.update(spec)
    return IncomingServer.model_validate({
        "apiVersion": "reconciler.dev/v1", "kind": "IncomingServer",
        "metadata": {"name": "graph-in", "namespace": "default"}, "spec": body})


def fetcher(graph: GraphPeer, certs: PeerCerts, *, tokens: Any = None,
            page_size: int | None = None, **spec: Any) -> GraphFetcher:
    made = fetcher_for(incoming(graph, **spec), ca_file=certs.ca_file,
                       token_provider=tokens or Tokens(TOKEN))
    assert isinstance(made, GraphFetcher)
    if page_size is not None:
        made._page_size = page_size
    return made


def _listings(graph: GraphPeer) -> list[int]:
    """The statuses of the folder listings (GET .../mailFolders/{id}/messages)."""
    return [status for method, path, status in graph.requests
            if method == "GET" and "/mailFolders/" in path and path.endswith("/messages")]


# -- fetching -----------------------------------------------------------------------------


async def test_fetches_unread_mail_oldest_first_as_stored(graph: GraphPeer,
                                                          certs: PeerCerts) -> None:
    raws = [path.read_bytes() for path in CORPUS[:4]]
    ids = [graph.store.deliver(DESK, raw) for raw in raws]
    graph.store.deliver(DESK, sample_mail(99), read=True)
    async with fetcher(graph, certs) as f:
        mails = await fetch_all(f)
    assert [m.raw for m in mails] == raws
    assert [m.marker for m in mails] == [f"graph:INBOX:{i}" for i in ids]
    times = [m.received_at for m in mails]
    assert None not in times and times == sorted(times)  # type: ignore[type-var]
    assert set(graph.tokens_seen) == {TOKEN}
    # downloading does not mark read
    assert [m.is_read for m in graph.store.messages(DESK)] == [False] * 4 + [True]


async def test_listing_follows_next_links(graph: GraphPeer, certs: PeerCerts) -> None:
    for i in range(7):
        graph.store.deliver(DESK, sample_mail(i))
    async with fetcher(graph, certs, page_size=3) as f:
        mails = await fetch_all(f)
        first_four = await fetch_all(f, limit=4)
    assert subjects(mails) == [f"Request {i}" for i in range(7)]
    assert subjects(first_four) == [f"Request {i}" for i in range(4)]
    assert len(_listings(graph)) == 3 + 2


async def test_markers_are_stable_across_sessions_and_skip_done_mail(
        graph: GraphPeer, certs: PeerCerts) -> None:
    for i in range(3):
        graph.store.deliver(DESK, sample_mail(i))
    async with fetcher(graph, certs) as first:
        before = await fetch_all(first)
    async with fetcher(graph, certs) as second:
        again = await fetch_all(second)
        done = {before[0].marker, before[2].marker}

        async def is_done(marker: str) -> bool:
            return marker in done

        rest = await fetch_all(second, is_done)
    assert [m.marker for m in again] == [m.marker for m in before]
    assert [m.marker for m in rest] == [before[1].marker]


async def test_mark_done_marks_read_and_keeps_the_mail(graph: GraphPeer,
                                                       certs: PeerCerts) -> None:
    for i in range(3):
        graph.store.deliver(DESK, sample_mail(i))
    async with fetcher(graph, certs) as f:
        mails = await fetch_all(f)
        await f.mark_done(mails[0])
    async with fetcher(graph, certs) as f:
        await f.mark_done(mails[1])
        left = await fetch_all(f)
    assert [m.marker for m in left] == [mails[2].marker]
    assert [m.is_read for m in graph.store.messages(DESK)] == [True, True, False]


async def test_named_folder_below_the_inbox(graph: GraphPeer, certs: PeerCerts) -> None:
    graph.store.add_folder(DESK, "Support's Queue", parent="inbox")
    graph.store.deliver(DESK, sample_mail(1))
    graph.store.deliver(DESK, sample_mail(2), "Support's Queue")
    async with fetcher(graph, certs, folder="Inbox/Support's Queue") as f:
        mails = await fetch_all(f)
    assert subjects(mails) == ["Request 2"]
    assert mails[0].marker.startswith("graph:Inbox/Support's Queue:")


async def test_missing_folder_is_a_config_error(graph: GraphPeer, certs: PeerCerts) -> None:
    f = fetcher(graph, certs, folder="Helpdesk")
    error = await connect_error(f)
    assert error.kind == FetchErrorKind.CONFIG
    assert "Helpdesk" in str(error) and "folder" in error.likely_fix


# -- error folder (I6) ----------------------------------------------------------------------


async def test_error_folder_is_created_counted_and_emptied_back(graph: GraphPeer,
                                                                certs: PeerCerts) -> None:
    for i in range(3):
        graph.store.deliver(DESK, sample_mail(i))
    async with fetcher(graph, certs, errorFolder={"enabled": True,
                                                  "name": "Desk Errors"}) as f:
        assert await f.error_folder_count() == 0
        assert graph.store.messages(DESK, "Desk Errors") == []  # counting does not create it
        mails = await fetch_all(f)
        await f.move_to_error_folder(mails[1])
        assert await f.error_folder_count() == 1
        assert subjects(await fetch_all(f)) == ["Request 0", "Request 2"]
        await f.move_to_error_folder(mails[2])
        creates = [p for m, p, s in graph.requests if m == "POST" and p.endswith("/mailFolders")]
        assert len(creates) == 1
        assert await f.move_back_from_error_folder() == 2
        assert await f.error_folder_count() == 0
        back = await fetch_all(f)
    assert subjects(back) == ["Request 0", "Request 1", "Request 2"]
    # a moved mail comes back under a new id: a new marker, so retry processes it again
    assert back[1].marker != mails[1].marker and back[0].marker == mails[0].marker
    assert not any(m.is_read for m in graph.store.messages(DESK))


# -- authentication and throttling ------------------------------------------------------


async def test_refused_token_is_refreshed_once(graph: GraphPeer, certs: PeerCerts) -> None:
    graph.store.deliver(DESK, sample_mail(1))
    tokens = Tokens("expired-graph-token", TOKEN)
    async with fetcher(graph, certs, tokens=tokens) as f:
        assert len(await fetch_all(f)) == 1
    assert tokens.invalidated == ["expired-graph-token"]
    assert graph.tokens_seen[:2] == ["expired-graph-token", TOKEN]


async def test_token_refused_twice_is_an_auth_error_without_the_token(
        graph: GraphPeer, certs: PeerCerts, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    tokens = Tokens("revoked-graph-AAAA", "revoked-graph-BBBB")
    f = fetcher(graph, certs, tokens=tokens)
    error = await connect_error(f)
    assert tokens.invalidated == ["revoked-graph-AAAA"]
    assert error.kind == FetchErrorKind.AUTH
    assert "reconcile auth login" in error.likely_fix
    for text in (error.user_text, repr(error), caplog.text):
        assert "revoked-graph" not in text


async def test_no_token_is_an_auth_error(graph: GraphPeer, certs: PeerCerts) -> None:
    async def refuse(server: Any) -> str:
        raise TokenError("invalid_client: AADSTS7000215 Invalid client secret provided")

    f = fetcher_for(incoming(graph), ca_file=certs.ca_file, token_provider=refuse)
    error = await connect_error(f)
    assert error.kind == FetchErrorKind.AUTH and "consent" in error.likely_fix
    assert graph.requests == []


async def test_missing_permission_names_mail_readwrite(graph: GraphPeer,
                                                       certs: PeerCerts) -> None:
    f = fetcher(graph, certs, email_address="other@corp.example")
    error = await connect_error(f)
    assert error.kind == FetchErrorKind.AUTH
    assert "Mail.ReadWrite" in error.likely_fix


async def test_unknown_mailbox_is_a_config_error(graph: GraphPeer, certs: PeerCerts) -> None:
    f = fetcher(graph, certs, email_address="nobody@corp.example")
    error = await connect_error(f)
    assert error.kind == FetchErrorKind.CONFIG
    assert "nobody@corp.example" in str(error)


async def test_basic_auth_is_refused_before_any_request(graph: GraphPeer,
                                                        certs: PeerCerts) -> None:
    f = fetcher(graph, certs, auth={"type": "basic", "username": DESK,
                                    "password": {"secretRef": "env:UNUSED_GRAPH_PW"}})
    error = await connect_error(f)
    assert error.kind == FetchErrorKind.CONFIG and "oauth2" in error.likely_fix
    assert graph.requests == []


async def test_throttling_waits_for_retry_after(graph: GraphPeer, certs: PeerCerts) -> None:
    graph.store.deliver(DESK, sample_mail(1))
    graph.fail_next(429, "ApplicationThrottled", "Application is over its MailboxConcurrency "
                    "limit.", retry_after="1", path="/messages")
    async with fetcher(graph, certs) as f:
        assert len(await fetch_all(f)) == 1
    assert _listings(graph) == [429, 200]


async def test_throttling_beyond_the_limit_is_left_to_the_next_interval(
        graph: GraphPeer, certs: PeerCerts) -> None:
    graph.store.deliver(DESK, sample_mail(1))
    graph.fail_next(429, "ApplicationThrottled", retry_after="3600", path="/messages")
    async with fetcher(graph, certs) as f:
        with pytest.raises(FetchError) as caught:
            await fetch_all(f)
    assert caught.value.kind == FetchErrorKind.CONNECT
    assert "throttling" in str(caught.value)


async def test_untrusted_certificate_is_a_tls_error(graph: GraphPeer) -> None:
    f = fetcher_for(incoming(graph), token_provider=Tokens(TOKEN))
    error = await connect_error(f)
    assert error.kind == FetchErrorKind.TLS
    assert "RECONCILE_TLS_CA_FILE" in error.likely_fix


async def test_two_hundred_mails_stream_one_at_a_time(graph: GraphPeer,
                                                      certs: PeerCerts) -> None:
    size = 100_000
    for i in range(200):
        graph.store.deliver(DESK, sample_mail(i, size=size))
    async with fetcher(graph, certs) as f:
        count, total, peak = await traced_fetch(f)
    assert count == 200 and total >= 200 * size
    # tracemalloc also counts the Graph peer, which serves from this process's
    # threads, and garbage waiting for the cycle collector: on a loaded machine
    # that reached a fifth of the mailbox, never the mailbox.
    assert peak < total / 4, (peak, total)


async def test_a_mailbox_behind_a_proxy_is_fetched_through_it(
        graph: GraphPeer, certs: PeerCerts, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    # The fetcher uses the same client as the transport, through the ProxyServer.
    secret = "gr4ph-f3tch-pr0xy"
    monkeypatch.setenv("GRAPH_FETCH_PROXY_PASSWORD", secret)
    caplog.set_level(logging.DEBUG)
    graph.store.deliver(DESK, sample_mail(1))
    proxy = ConnectProxy()
    spec = ProxyServerSpec.model_validate({
        "type": "http", "host": "127.0.0.1", "port": proxy.port, "username": "relay",
        "password": {"secretRef": "env:GRAPH_FETCH_PROXY_PASSWORD"}})
    try:
        async with fetcher_for(incoming(graph, proxy="corp-proxy"), ca_file=certs.ca_file,
                               token_provider=Tokens(TOKEN), proxy_lookup=lambda s: spec) as f:
            mails = await fetch_all(f)
    finally:
        proxy.close()
    assert subjects(mails) == ["Request 1"]
    assert set(proxy.tunnels) == {f"127.0.0.1:{graph.port}"}
    assert secret not in caplog.text


async def test_debug_traces_each_request_without_the_token(
        graph: GraphPeer, certs: PeerCerts, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="reconciler.mail.trace")
    graph.store.deliver(DESK, sample_mail(1))
    async with fetcher(graph, certs, debug=True) as f:
        assert len(await fetch_all(f)) == 1
    lines = [r.getMessage() for r in caplog.records if r.name == "reconciler.mail.trace"]
    assert any("> GET " in line and "/messages" in line for line in lines), lines
    assert any(line.endswith("< 200 ") or "< 200" in line for line in lines)
    assert all(line.startswith("IncomingServer default/graph-in: ") for line in lines)
    assert TOKEN not in caplog.text
