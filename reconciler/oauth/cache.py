"""The OAuth token cache: ``store.tokens`` rows, one per server, sealed here.

Why the rows live in the store, and how generations keep two refreshing
processes from overwriting each other: ``state.tokens`` and ``state.contract.Tokens``.
Why sealed: a refresh token is as good as a password for the mailbox, and a store
dump must not hand it out. The sealed blob is Fernet (``config.sealing``, as for
``enc:v1:`` secrets) under a key that is itself a secret reference
(``RECONCILE_TOKEN_KEY`` by default), so a store backup alone is useless.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, fields
from datetime import datetime

from reconciler.config.models.auth import OAuth2Auth
from reconciler.config.sealing import SealError, check_key, seal, unseal
from reconciler.config.secrets import SecretError, resolve_operator
from reconciler.state.contract import TokenKey, TokenRow, Tokens, TokenWrite

TOKEN_KEY_ENV = "RECONCILE_TOKEN_KEY"
DEFAULT_TOKEN_KEY_REF = f"env:{TOKEN_KEY_ENV}"

_NO_KEY = (f"no token cache key: OAuth tokens are stored encrypted; create a key with "
           f"`reconcile secret keygen` and set {TOKEN_KEY_ENV} (or pass --token-key REF)")


class TokenKeyError(Exception):
    """The key that seals cached tokens is missing or unusable; the message says how to fix it."""


def load_key(ref: str | None = None) -> bytes:
    """The Fernet key behind ``ref`` (a secret reference; default ``env:RECONCILE_TOKEN_KEY``)."""
    ref = ref or os.environ.get("RECONCILE_TOKEN_KEY_REF") or DEFAULT_TOKEN_KEY_REF
    try:
        raw = resolve_operator(ref).strip()
    except SecretError as exc:
        raise TokenKeyError(
            f"cannot read the token cache key ({exc}): OAuth tokens are stored encrypted and "
            f"need a key; create one with `reconcile secret keygen` and give it as "
            f"{TOKEN_KEY_ENV} or with --token-key env:NAME|file:/path") from None
    try:
        return check_key(raw)
    except SealError:
        raise TokenKeyError(
            "the token cache key is not a Fernet key (32 url-safe base64 bytes); create one "
            "with `reconcile secret keygen`") from None


def client_digest(auth: OAuth2Auth) -> str:
    """Which app registration a row belongs to (never includes the secret)."""
    parts = [str(auth.provider), str(auth.grant), auth.client_id, auth.tenant or "",
             str(auth.token_url or ""), " ".join(auth.scope or [])]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


@dataclass
class Sealed:
    """What is encrypted: never leaves this module in clear except to the provider."""

    access_token: str | None = None
    refresh_token: str | None = None
    msal_cache: str | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Sealed:
        data = json.loads(text)
        return cls(*(data.get(f.name) for f in fields(cls)))


class TokenCache:
    """``store.tokens`` with sealing: tokens go in sealed under one key and come out clear."""

    def __init__(self, tokens: Tokens, key: bytes | None = None) -> None:
        self.tokens = tokens
        self._key = key

    def seal(self, sealed: Sealed) -> str:
        if self._key is None:
            raise TokenKeyError(_NO_KEY)
        return seal(self._key, sealed.to_json())

    def unseal(self, row: TokenRow) -> Sealed:
        if row.sealed_text is None:
            return Sealed()
        if self._key is None:
            raise TokenKeyError(_NO_KEY)
        try:
            return Sealed.from_json(unseal(self._key, row.sealed_text).decode())
        except (SealError, ValueError):
            raise TokenKeyError(
                f"the cached tokens of {'/'.join(row.key[1:])} cannot be decrypted with this "
                "key (the key changed?): use the key they were written with, or "
                f"`reconcile auth login {'/'.join(row.key[1:])}` again") from None

    def put(self, key: TokenKey, *, digest: str, grant: str, account: str | None,
            sealed: Sealed, access_expires_at: datetime | None,
            expect_generation: int | None) -> int | None:
        """Write tokens; the new generation, or None when another writer got there first.

        ``expect_generation`` None means "whatever is there" (a fresh login).
        """
        return self.tokens.write(key, TokenWrite(
            digest, grant, account, self.seal(sealed),
            refresh_present=bool(sealed.refresh_token or sealed.msal_cache),
            access_expires_at=access_expires_at), expect_generation=expect_generation)
