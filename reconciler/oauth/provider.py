"""The token provider every transport and probe uses for OAuth2 servers (SPEC O11), a
:class:`~reconciler.oauth.source.TokenSource`.

A token is reused until ``REFRESH_SKEW`` before it expires, then refreshed: client
credentials ask again, authorization-code grants use the stored refresh token (msal's
cache for Microsoft). One refresh at a time per server in this process (an asyncio
lock), and across processes the store row decides (a process that finds a fresher row
than it expected uses it). Invalidating a token that was already replaced does
nothing, so twenty callers that all saw the same 535 cause one refresh, not twenty.
A permanent failure of a delegated grant is remembered in the store, so a daemon does
not hammer the identity provider with a grant that can no longer work.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from reconciler.config.models.auth import OAuth2Auth, OAuthGrant
from reconciler.oauth.cache import Sealed, TokenCache, TokenKeyError, client_digest, load_key
from reconciler.oauth.errors import login_hint
from reconciler.oauth.flows import Flow, FlowError, Grant, flow_for
from reconciler.oauth.source import TokenError
from reconciler.state.base import Store, StoreError
from reconciler.state.contract import TokenKey, TokenRow, TokenWrite

log = logging.getLogger(__name__)

REFRESH_SKEW = timedelta(minutes=5)


@dataclass
class _Held:
    token: str
    expires_at: datetime
    generation: int
    digest: str


def server_key(server: Any) -> TokenKey:
    return (str(server.kind), str(server.metadata.namespace), str(server.metadata.name))


def server_label(server: Any) -> str:
    return f"{server.metadata.namespace}/{server.metadata.name}"


def oauth_auth(server: Any) -> OAuth2Auth:
    auth = server.spec.auth
    if not isinstance(auth, OAuth2Auth):
        raise TokenError(f"{server_label(server)} does not use OAuth2 authentication",
                         permanent=True)
    return auth


class OAuthTokenProvider:
    """Access tokens from the encrypted store cache, refreshed ahead of expiry."""

    def __init__(self, cache: TokenCache, *, ca_file: str | None = None,
                 skew: timedelta = REFRESH_SKEW) -> None:
        self._cache = cache
        self._ca_file = ca_file
        self._skew = skew
        self._held: dict[TokenKey, _Held] = {}
        self._locks: dict[TokenKey, asyncio.Lock] = {}

    def flow(self, server: Any) -> Flow:
        return flow_for(oauth_auth(server), ca_file=self._ca_file, server=server_label(server))

    async def token(self, server: Any) -> str:
        auth = oauth_auth(server)
        key, digest = server_key(server), client_digest(auth)
        held = self._fresh(key, digest)
        if held is not None:
            return held.token
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            held = self._fresh(key, digest)  # another caller refreshed while we waited
            if held is None:
                held = await self._obtain(server, auth, key, digest)
            return held.token

    async def invalidate(self, server: Any, token: str) -> None:
        key = server_key(server)
        async with self._locks.setdefault(key, asyncio.Lock()):
            held = self._held.get(key)
            if held is None or held.token != token:
                return  # already replaced
            del self._held[key]
            await self._store(self._cache.tokens.expire_access, key, held.generation)
        log.info("access token of %s refused by the server; the next send refreshes it",
                 server_label(server))

    def _fresh(self, key: TokenKey, digest: str) -> _Held | None:
        held = self._held.get(key)
        if held is None or held.digest != digest:
            return None
        return None if held.expires_at - self._skew <= datetime.now(UTC) else held

    async def _store(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return await asyncio.to_thread(fn, *args, **kwargs)
        except TokenKeyError as exc:
            raise TokenError(str(exc), permanent=True) from None
        except StoreError as exc:
            raise TokenError(f"the token cache is unavailable: {exc}") from None

    async def _obtain(self, server: Any, auth: OAuth2Auth, key: TokenKey,
                      digest: str) -> _Held:
        label = server_label(server)
        row: TokenRow | None = await self._store(self._cache.tokens.get, key)
        if row is not None and row.client_digest != digest:
            row = None  # written for another app registration: start over
        sealed = await self._store(self._cache.unseal, row) if row is not None else None
        if row is not None and sealed is not None and sealed.access_token \
                and row.access_expires_at is not None \
                and row.access_expires_at - self._skew > datetime.now(UTC):
            # Another process refreshed: its token is as good as ours would be.
            return self._keep(key, sealed.access_token, row.access_expires_at,
                              row.generation, digest)
        account = (row.account if row is not None else None) or auth.username
        try:
            grant = await self._ask(auth, label, row, sealed, account)
        except FlowError as exc:
            message = f"{label}: {exc.problem}"
            log.warning("no access token for %s: %s", label, exc.problem)
            await self._store(self._cache.tokens.write, key, TokenWrite(
                digest, str(auth.grant), account, error=message,
                error_permanent=exc.problem.permanent), expect_generation=None)
            raise TokenError(message, permanent=exc.problem.permanent) from None
        generation = row.generation if row is not None else 0
        return await self._save(key, digest, auth, grant, generation, sealed)

    async def _ask(self, auth: OAuth2Auth, label: str, row: TokenRow | None, sealed: Any,
                   account: str | None) -> Grant:
        """A new grant from the identity provider: client credentials ask again, a
        delegated grant refreshes unless no person ever signed in or its last
        refresh failed for good (then asking again only hammers the provider)."""
        flow = flow_for(auth, ca_file=self._ca_file, server=label)
        if auth.grant != OAuthGrant.AUTHORIZATION_CODE:
            return await flow.client_credentials()
        if row is None or not row.refresh_present:
            raise TokenError(f"{label} has not been authorized yet: {login_hint(label)}",
                             permanent=True)
        if row.last_error_permanent:
            raise TokenError(row.last_error or f"{label}: {login_hint(label)}", permanent=True)
        assert sealed is not None
        return await flow.refresh(sealed.refresh_token, sealed.msal_cache, account)

    async def _save(self, key: TokenKey, digest: str, auth: OAuth2Auth, grant: Grant,
                    generation: int, previous: Any) -> _Held:
        expires_at = datetime.now(UTC) + timedelta(seconds=grant.expires_in)
        sealed = Sealed(grant.access_token, grant.refresh_token, grant.msal_cache)
        if previous is not None and auth.grant == OAuthGrant.AUTHORIZATION_CODE:
            sealed.refresh_token = sealed.refresh_token or previous.refresh_token
            sealed.msal_cache = sealed.msal_cache or previous.msal_cache
        account = grant.account or auth.username
        written = await self._store(self._cache.put, key, digest=digest, grant=str(auth.grant),
                                    account=account, sealed=sealed,
                                    access_expires_at=expires_at,
                                    expect_generation=generation)
        if written is None:
            # Another process wrote meanwhile; ours is valid too, and theirs
            # stays the stored one. Keep using ours until it nears expiry.
            written = generation
        return self._keep(key, grant.access_token, expires_at, written, digest)

    def _keep(self, key: TokenKey, token: str, expires_at: datetime, generation: int,
              digest: str) -> _Held:
        held = _Held(token, expires_at, generation, digest)
        self._held[key] = held
        return held


async def store_login(cache: TokenCache, server: Any, grant: Grant) -> int:
    """Keep what `reconcile auth login` obtained; the row's new generation."""
    auth = oauth_auth(server)
    expires_at = datetime.now(UTC) + timedelta(seconds=grant.expires_in)
    written = await asyncio.to_thread(
        cache.put, server_key(server), digest=client_digest(auth), grant=str(auth.grant),
        account=grant.account or auth.username or server.spec.email,
        sealed=Sealed(grant.access_token, grant.refresh_token, grant.msal_cache),
        access_expires_at=expires_at, expect_generation=None)
    assert written is not None
    return written


def provider_for_store(store: Store, *, key_ref: str | None = None,
                       ca_file: str | None = None) -> OAuthTokenProvider:
    """A provider caching tokens in ``store``, sealed with the key ``key_ref`` names.

    A missing key is not an error here (servers without OAuth need none); the
    first token request then fails with a message saying how to set the key.
    """
    try:
        key: bytes | None = load_key(key_ref)
    except TokenKeyError:
        key = None
    return OAuthTokenProvider(TokenCache(store.tokens, key), ca_file=ca_file)
