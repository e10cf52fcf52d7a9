"""OAuth2 for mail servers (SPEC O11): token providers, the encrypted token cache,
and the meaning of identity-provider errors.

Consumers (SMTP/IMAP/POP3 XOAUTH2, Graph, EWS, health probes) take a
:class:`~reconciler.mail.transport.TokenSource`; the real one is
:class:`OAuthTokenProvider` (see its module for the contract). Build one with
:func:`provider_for_store`.
"""

from __future__ import annotations

from reconciler.oauth.cache import TokenCache, TokenKeyError, load_key
from reconciler.oauth.errors import OAuthProblem, classify
from reconciler.oauth.provider import OAuthTokenProvider
from reconciler.state.base import Store


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


__all__ = ["OAuthProblem", "OAuthTokenProvider", "TokenCache", "TokenKeyError", "classify",
           "load_key", "provider_for_store"]
