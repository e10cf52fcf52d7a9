"""The token cache table: sealed at rest (no token or secret in the database file or
rows), unreadable with another key, and generation-checked writes between processes."""

from __future__ import annotations

from pathlib import Path

import pytest
from peers.oauth_server import OAuthPeer
from peers.postgres import RawSql

from reconciler.config.sealing import new_key
from reconciler.oauth.cache import Sealed, TokenCache, TokenKeyError, load_key
from reconciler.oauth.flows import Grant
from reconciler.oauth.provider import OAuthTokenProvider, server_key, store_login
from reconciler.oauth.source import TokenError
from reconciler.state import SqlStore

from .kit import CLIENT, SECRET, oauth_server

ACCESS = "at-PLANTED-access-token-4711"
REFRESH = "rt-PLANTED-refresh-token-0815"


async def test_tokens_are_never_in_the_database_in_clear(
        store: SqlStore, store_url: str, raw_sql: RawSql, token_key: bytes,
        idp: OAuthPeer) -> None:
    idp.register(CLIENT, SECRET)
    cache = TokenCache(store.tokens, token_key)
    delegated = oauth_server(idp, name="delegated", grant="authorizationCode")
    await store_login(cache, delegated, Grant(ACCESS, 3600, REFRESH, None, "helpdesk@x"))
    app_only = oauth_server(idp, name="app-only")
    issued = await OAuthTokenProvider(cache, ca_file=str(idp.certs.ca_file)).token(app_only)

    rows = raw_sql("SELECT * FROM oauth_tokens")
    assert len(rows) == 2
    dump = repr(rows)
    for secret in (ACCESS, REFRESH, issued, SECRET):
        assert secret not in dump
    if "://" not in store_url:  # SQLite: the file itself (and its journal) on disk
        raw = b"".join(p.read_bytes() for p in Path(store_url).parent.glob(
            Path(store_url).name + "*"))
        for secret in (ACCESS, REFRESH, issued, SECRET):
            assert secret.encode() not in raw
    row = cache.tokens.get(server_key(delegated))
    assert row is not None and row.refresh_present and row.account == "helpdesk@x"
    assert cache.unseal(row).refresh_token == REFRESH


async def test_another_key_cannot_read_the_tokens(store: SqlStore, token_key: bytes,
                                                  idp: OAuthPeer) -> None:
    server = oauth_server(idp, grant="authorizationCode")
    await store_login(TokenCache(store.tokens, token_key), server,
                      Grant(ACCESS, 3600, REFRESH))
    other = OAuthTokenProvider(TokenCache(store.tokens, new_key().encode()))
    with pytest.raises(TokenError) as err:
        await other.token(server)
    assert err.value.permanent and "cannot be decrypted with this key" in str(err.value)
    assert ACCESS not in str(err.value)


def test_generation_check_between_writers(store: SqlStore, token_key: bytes) -> None:
    cache = TokenCache(store.tokens, token_key)
    key = ("OutgoingServer", "default", "o365")

    def put(expect: int | None) -> int | None:
        return cache.put(key, digest="d", grant="clientCredentials", account=None,
                         sealed=Sealed("a"), access_expires_at=None, expect_generation=expect)

    assert put(0) == 1
    assert put(1) == 2
    assert put(1) is None  # someone else wrote generation 2 meanwhile: ours is not stored
    assert cache.tokens.get(key) is not None and cache.tokens.get(key).generation == 2  # type: ignore[union-attr]


def test_missing_or_bad_key_says_how_to_make_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RECONCILE_TOKEN_KEY", raising=False)
    with pytest.raises(TokenKeyError, match="reconcile secret keygen"):
        load_key()
    monkeypatch.setenv("RECONCILE_TOKEN_KEY", "not-a-key")
    with pytest.raises(TokenKeyError, match="not a Fernet key"):
        load_key()
    monkeypatch.setenv("DESK_KEY_ELSEWHERE", new_key())
    assert load_key("env:DESK_KEY_ELSEWHERE")
