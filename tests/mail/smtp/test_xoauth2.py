"""SMTP XOAUTH2 with the real token provider: tokens from the local identity provider,
checked by an aiosmtpd peer that asks that provider. A refused token (535 5.7.3) is
refreshed once; a second refusal, or a revoked grant, fails with the reason, and the
health check says how to repair it."""

from __future__ import annotations

import base64
import logging
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from oauth.kit import CLIENT, SECRET, _client_secret, oauth_server  # noqa: F401 - fixture
from peers.oauth_server import OAuthPeer
from peers.smtp import PeerCerts
from peers.smtp_xoauth2 import XOAuth2Peer

from reconciler.health.diagnose import likely_fix
from reconciler.health.probes import probe_server
from reconciler.mail.outcome import Failure, Outcome
from reconciler.mail.probe_options import ProbeOptions
from reconciler.mail.smtp.transport import SmtpTransport
from reconciler.mail.steps import Reason, Step
from reconciler.oauth.cache import TokenCache
from reconciler.oauth.provider import OAuthTokenProvider
from reconciler.state import SqlStore, open_store

from .test_transport import envelope_for


@pytest.fixture
def sqlite(tmp_path: Path) -> Iterator[SqlStore]:
    with open_store(str(tmp_path / "state.db")) as store:
        yield store


@pytest.fixture
def mail(idp: OAuthPeer, certs: PeerCerts) -> Iterator[XOAuth2Peer]:
    peer = XOAuth2Peer(idp, certs=certs).start()
    yield peer
    peer.stop()


def tokens(store: SqlStore, key: bytes, idp: OAuthPeer, **kw: object) -> OAuthTokenProvider:
    return OAuthTokenProvider(TokenCache(store.tokens, key), ca_file=str(idp.certs.ca_file),
                              **kw)  # type: ignore[arg-type]


async def send(provider: OAuthTokenProvider, certs: PeerCerts, server: object):  # type: ignore[no-untyped-def]
    transport = SmtpTransport(ca_file=certs.ca_file, token_provider=provider,
                              local_hostname="client.test", connect_timeout=30.0)
    try:
        return await transport.send(envelope_for(server), server)  # type: ignore[arg-type]
    finally:
        await transport.aclose()


async def test_send_with_an_app_only_token(sqlite: SqlStore, token_key: bytes, idp: OAuthPeer,
                                           mail: XOAuth2Peer, certs: PeerCerts) -> None:
    idp.register(CLIENT, SECRET)
    server = oauth_server(idp, port=mail.port)
    result = await send(tokens(sqlite, token_key, idp), certs, server)
    assert result.outcome == Outcome.SENT, result.detail
    assert len(mail.messages) == 1 and mail.attempts == [True]


async def test_refused_token_is_refreshed_once_then_the_send_succeeds(
        sqlite: SqlStore, token_key: bytes, idp: OAuthPeer, mail: XOAuth2Peer,
        certs: PeerCerts, caplog: pytest.LogCaptureFixture) -> None:
    idp.register(CLIENT, SECRET)
    provider = tokens(sqlite, token_key, idp)
    server = oauth_server(idp, port=mail.port)
    first = await provider.token(server)
    mail.handler.refuse_next = 1  # type: ignore[attr-defined]
    with caplog.at_level(logging.DEBUG):
        result = await send(provider, certs, server)
    assert result.outcome == Outcome.SENT, result.detail
    assert mail.attempts == [False, True]
    assert idp.count() == 2  # the refused token was replaced exactly once
    assert await provider.token(server) != first
    text = caplog.text + repr(result)
    for token in idp.access:
        assert token not in text
        assert base64.b64encode(token.encode()).decode() not in text


async def test_refused_twice_fails_permanently_with_the_reason(
        sqlite: SqlStore, token_key: bytes, idp: OAuthPeer, mail: XOAuth2Peer,
        certs: PeerCerts) -> None:
    idp.register(CLIENT, SECRET)
    mail.handler.refuse_next = 2  # type: ignore[attr-defined]
    result = await send(tokens(sqlite, token_key, idp), certs, oauth_server(idp, port=mail.port))
    assert (result.outcome, result.failure) == (Outcome.PERMANENT, Failure.AUTH)
    assert "535 5.7.3 Authentication unsuccessful" in result.detail
    assert "freshly refreshed access token" in result.detail
    assert mail.attempts == [False, False] and idp.count() == 2 and not mail.messages


async def _revoked(sqlite: SqlStore, token_key: bytes, idp: OAuthPeer,
                   port: int) -> tuple[OAuthTokenProvider, object]:
    """A delegated server whose refresh token the identity provider has revoked."""
    from reconciler.oauth.flows import Grant
    from reconciler.oauth.provider import store_login

    redirect = "http://127.0.0.1:9/cb"
    idp.register(CLIENT, SECRET, redirect_uris=(redirect,))
    server = oauth_server(idp, port=port, grant="authorizationCode", provider="google")
    grant_body = idp.issue(CLIENT, "helpdesk@desk.example", "https://mail.google.com/",
                           with_refresh=True)
    await store_login(TokenCache(sqlite.tokens, token_key), server,
                      Grant(grant_body["access_token"], 3600, grant_body["refresh_token"]))
    idp.revoke_refresh_tokens()
    idp.expire_access_tokens()
    return tokens(sqlite, token_key, idp, skew=timedelta(hours=2)), server


async def test_revoked_grant_fails_sends_and_shows_in_health(
        sqlite: SqlStore, token_key: bytes, idp: OAuthPeer, mail: XOAuth2Peer,
        certs: PeerCerts) -> None:
    provider, server = await _revoked(sqlite, token_key, idp, mail.port)
    result = await send(provider, certs, server)
    assert (result.outcome, result.failure) == (Outcome.PERMANENT, Failure.AUTH)
    assert "reconcile auth login default/o365" in result.detail
    assert mail.attempts == []  # no login attempt with a token known to be dead

    report = await probe_server(server,  # type: ignore[arg-type]
                                options=ProbeOptions(ca_file=certs.ca_file,
                                                     token_provider=provider))
    failed = report.failed
    assert failed is not None and failed.step == Step.AUTH
    assert failed.reason == Reason.TOKEN_PERMANENT
    assert "expired or revoked" in failed.detail
    assert "reconcile auth login default/o365" in failed.detail
    assert report.endpoint is not None
    assert "reconcile auth login default/o365" in likely_fix(
        failed, server, report.endpoint)  # type: ignore[arg-type]
