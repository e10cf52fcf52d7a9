"""The token provider against the local identity provider (msal for Microsoft, httpx
for generic): client credentials, refresh ahead of expiry, one refresh for many
callers, revoked grants and bad secrets as permanent errors with their fix."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

import pytest
from peers.oauth_server import OAuthPeer

from reconciler.oauth.cache import TokenCache
from reconciler.oauth.flows import Grant
from reconciler.oauth.provider import OAuthTokenProvider, store_login
from reconciler.oauth.source import TokenError, TokenSource, fetch_token
from reconciler.state import SqlStore

from .kit import CLIENT, SECRET, oauth_server


def provider(store: SqlStore, key: bytes, idp: OAuthPeer, **kw: object) -> OAuthTokenProvider:
    return OAuthTokenProvider(TokenCache(store.tokens, key), ca_file=str(idp.certs.ca_file),
                              **kw)  # type: ignore[arg-type]


async def test_client_credentials_via_msal_then_cached(store: SqlStore, token_key: bytes,
                                                      idp: OAuthPeer) -> None:
    idp.register(CLIENT, SECRET)
    tokens = provider(store, token_key, idp)
    assert isinstance(tokens, TokenSource)
    server = oauth_server(idp)
    first = await fetch_token(tokens, server)
    assert idp.valid_access(first) is not None
    assert await tokens.token(server) == first
    # a second process (a new provider on the same store) uses the stored token
    assert await provider(store, token_key, idp).token(server) == first
    assert idp.count("client_credentials") == 1


async def test_twenty_concurrent_callers_cause_one_token_request(
        store: SqlStore, token_key: bytes, idp: OAuthPeer) -> None:
    idp.register(CLIENT, SECRET)
    tokens = provider(store, token_key, idp)
    server = oauth_server(idp)
    got = await asyncio.gather(*(tokens.token(server) for _ in range(20)))
    assert len(set(got)) == 1
    assert idp.count() == 1


async def test_refreshes_ahead_of_expiry(store: SqlStore, token_key: bytes,
                                         idp: OAuthPeer) -> None:
    idp.register(CLIENT, SECRET)
    idp.access_lifetime = 240  # less than the 5-minute skew: always "about to expire"
    tokens = provider(store, token_key, idp)
    server = oauth_server(idp)
    first = await tokens.token(server)
    second = await tokens.token(server)
    assert first != second and idp.count() == 2
    idp.access_lifetime = 3600
    third = await tokens.token(server)
    assert await tokens.token(server) == third and idp.count() == 3


async def test_invalidate_refreshes_once_for_many_callers(store: SqlStore, token_key: bytes,
                                                          idp: OAuthPeer) -> None:
    idp.register(CLIENT, SECRET)
    tokens = provider(store, token_key, idp)
    server = oauth_server(idp)
    refused = await tokens.token(server)
    await asyncio.gather(*(tokens.invalidate(server, refused) for _ in range(5)))
    fresh = await asyncio.gather(*(tokens.token(server) for _ in range(5)))
    assert set(fresh) != {refused} and len(set(fresh)) == 1
    assert idp.count() == 2
    # another process does not pick up the refused token from the store either
    assert await provider(store, token_key, idp).token(server) == fresh[0]


async def _login(store: SqlStore, key: bytes, idp: OAuthPeer, server: object) -> None:
    """What `reconcile auth login` leaves behind, obtained through the real code flow."""
    tokens = provider(store, key, idp)
    flow = tokens.flow(server)
    import httpx

    request = flow.begin_login("http://127.0.0.1:9/cb", "helpdesk@desk.example")
    import ssl

    context = ssl.create_default_context(cafile=str(idp.certs.ca_file))
    async with httpx.AsyncClient(verify=context) as client:
        reply = await client.get(request.url)
    assert reply.status_code == 302, reply.text
    from urllib.parse import parse_qs, urlsplit

    query = {k: v[0] for k, v in parse_qs(urlsplit(reply.headers["location"]).query).items()}
    grant: Grant = await flow.finish_login(request, query)
    await store_login(TokenCache(store.tokens, key), server, grant)


@pytest.mark.parametrize("provider_name", ["microsoft", "google"])
async def test_delegated_grant_refreshes_with_the_stored_refresh_token(
        store: SqlStore, token_key: bytes, idp: OAuthPeer, provider_name: str) -> None:
    idp.register(CLIENT, SECRET, redirect_uris=("http://127.0.0.1:9/cb",))
    server = oauth_server(idp, grant="authorizationCode", provider=provider_name)
    await _login(store, token_key, idp, server)
    assert idp.count("authorization_code") == 1
    idp.expire_access_tokens()
    tokens = provider(store, token_key, idp, skew=timedelta(hours=2))  # stored one is "old"
    token = await tokens.token(server)
    assert idp.valid_access(token) is not None
    assert idp.count("refresh_token") == 1


@pytest.mark.parametrize("provider_name", ["microsoft", "google"])
async def test_revoked_grant_is_permanent_and_says_how_to_repair(
        store: SqlStore, token_key: bytes, idp: OAuthPeer, provider_name: str,
        caplog: pytest.LogCaptureFixture) -> None:
    idp.register(CLIENT, SECRET, redirect_uris=("http://127.0.0.1:9/cb",))
    server = oauth_server(idp, grant="authorizationCode", provider=provider_name)
    await _login(store, token_key, idp, server)
    idp.revoke_refresh_tokens()
    tokens = provider(store, token_key, idp, skew=timedelta(hours=2))
    with caplog.at_level(logging.DEBUG), pytest.raises(TokenError) as err:
        await tokens.token(server)
    assert err.value.permanent
    assert "expired or revoked" in str(err.value)
    assert "reconcile auth login default/o365" in str(err.value)
    requests = idp.count()
    # remembered: the next send fails at once without asking the identity provider again
    with pytest.raises(TokenError):
        await provider(store, token_key, idp, skew=timedelta(hours=2)).token(server)
    assert idp.count() == requests
    assert SECRET not in caplog.text and "rt-" not in caplog.text and "at-" not in caplog.text


async def test_not_yet_authorized(store: SqlStore, token_key: bytes, idp: OAuthPeer) -> None:
    server = oauth_server(idp, grant="authorizationCode")
    with pytest.raises(TokenError) as err:
        await provider(store, token_key, idp).token(server)
    assert err.value.permanent and "reconcile auth login default/o365" in str(err.value)
    assert idp.count() == 0


@pytest.mark.parametrize(("fault", "words"), [
    ("wrong-secret", "rejected the client secret"),
    ("expired-secret", "client secret has expired"),
    ("no-consent", "Grant admin consent"),
    ("unknown-client", "not known to the identity provider"),
])
async def test_client_problems_are_permanent_with_the_fix(
        store: SqlStore, token_key: bytes, idp: OAuthPeer, fault: str, words: str) -> None:
    client = idp.register(CLIENT if fault != "unknown-client" else "someone-else",
                          SECRET if fault != "wrong-secret" else "another-secret")
    client.secret_expired = fault == "expired-secret"
    client.consented = fault != "no-consent"
    with pytest.raises(TokenError) as err:
        await provider(store, token_key, idp).token(oauth_server(idp))
    assert err.value.permanent
    assert words in str(err.value)
    assert "correlation id" in str(err.value)
    assert SECRET not in str(err.value)


async def test_identity_provider_down_is_transient(store: SqlStore, token_key: bytes,
                                                   idp: OAuthPeer) -> None:
    server = oauth_server(idp)
    idp.stop()
    with pytest.raises(TokenError) as err:
        await provider(store, token_key, idp).token(server)
    assert not err.value.permanent
    assert "cannot reach the identity provider" in str(err.value)


async def test_incoming_servers_share_the_provider_but_not_the_cache_row(
        store: SqlStore, token_key: bytes, idp: OAuthPeer) -> None:
    from reconciler.config.models.incoming_server import IncomingServer

    idp.register(CLIENT, SECRET)
    outgoing = oauth_server(idp)
    incoming = IncomingServer.model_validate({
        "apiVersion": "reconciler.dev/v1", "kind": "IncomingServer",
        "metadata": {"name": "o365", "namespace": "default"},
        "spec": {"email": "helpdesk@desk.example", "protocol": "imaps", "host": "127.0.0.1",
                 "port": 993, "auth": outgoing.spec.auth.model_dump(by_alias=True)}})
    tokens = provider(store, token_key, idp)
    a, b = await tokens.token(outgoing), await tokens.token(incoming)
    assert a != b and idp.count() == 2  # same name, other kind: its own token
    assert {r.key[0] for r in store.tokens.all()} == {
        "OutgoingServer", "IncomingServer"}
