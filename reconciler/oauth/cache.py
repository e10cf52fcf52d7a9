"""The OAuth token cache in the state store: one sealed row per server.

Why in the store and not in memory or a file: the daemon, `reconcile auth
login` and `reconcile test-connection` run as different processes, possibly
on different machines against one PostgreSQL, and a refresh token obtained by
one must be usable by all. Why sealed: a refresh token is as good as a
password for the mailbox, and a store dump must not hand it out. The sealed
blob is Fernet (the same cipher as ``enc:v1:`` secrets) under a key that is
itself a secret reference (``RECONCILE_TOKEN_KEY`` by default), so a store
backup alone is useless.

Rows are written with a generation number: a writer that read generation
``g`` only succeeds if the row is still at ``g``, so of two processes
refreshing at once the second sees the first's token instead of overwriting
it (the store row is the source of truth across processes).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, insert, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from reconciler.config.models.auth import OAuth2Auth
from reconciler.config.secrets import SecretError, resolve_operator
from reconciler.state import schema as t
from reconciler.state.location import Location, explain, translated

TOKEN_KEY_ENV = "RECONCILE_TOKEN_KEY"
DEFAULT_TOKEN_KEY_REF = f"env:{TOKEN_KEY_ENV}"
MAX_ERROR = 1000

ServerKey = tuple[str, str, str]  # kind, namespace, name
_NO_KEY = (f"no token cache key: OAuth tokens are stored encrypted; create a key with "
           f"`reconcile secret keygen` and set {TOKEN_KEY_ENV} (or pass --token-key REF)")


class TokenKeyError(Exception):
    """The key that seals cached tokens is missing or unusable; the message says how to fix it."""


def load_key(ref: str | None = None) -> bytes:
    """The Fernet key behind ``ref`` (a secret reference; default ``env:RECONCILE_TOKEN_KEY``)."""
    from cryptography.fernet import Fernet

    ref = ref or os.environ.get("RECONCILE_TOKEN_KEY_REF") or DEFAULT_TOKEN_KEY_REF
    try:
        raw = resolve_operator(ref).strip()
    except SecretError as exc:
        raise TokenKeyError(
            f"cannot read the token cache key ({exc}): OAuth tokens are stored encrypted and "
            f"need a key; create one with `reconcile secret keygen` and give it as "
            f"{TOKEN_KEY_ENV} or with --token-key env:NAME|file:/path") from None
    try:
        Fernet(raw.encode())
    except ValueError:
        raise TokenKeyError(
            "the token cache key is not a Fernet key (32 url-safe base64 bytes); create one "
            "with `reconcile secret keygen`") from None
    return raw.encode()


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
        return json.dumps({"access_token": self.access_token,
                           "refresh_token": self.refresh_token,
                           "msal_cache": self.msal_cache})

    @classmethod
    def from_json(cls, text: str) -> Sealed:
        data = json.loads(text)
        return cls(data.get("access_token"), data.get("refresh_token"), data.get("msal_cache"))


@dataclass
class TokenRow:
    """One server's row: clear columns plus the (decrypted on demand) sealed part."""

    key: ServerKey
    client_digest: str
    grant: str
    account: str | None
    access_expires_at: datetime | None
    refresh_present: bool
    generation: int
    last_error: str | None
    last_error_permanent: bool
    last_error_at: datetime | None
    updated_at: datetime
    sealed_text: str | None = field(default=None, repr=False)


class TokenCache:
    """Reads and writes ``oauth_tokens`` of one store; seals with one key."""

    def __init__(self, engine: Engine, writer: Engine, location: Location,
                 key: bytes | None = None) -> None:
        self._engine = engine
        self._writer = writer
        self._loc = location
        self._key = key

    @classmethod
    def of_store(cls, store: Any, key: bytes | None = None) -> TokenCache:
        """The cache inside an open :class:`~reconciler.state.SqlStore`."""
        shared = store.connections
        return cls(shared.engine, shared.writer, shared.location, key)

    # -- sealing ------------------------------------------------------------

    def seal(self, sealed: Sealed) -> str:
        from cryptography.fernet import Fernet

        if self._key is None:
            raise TokenKeyError(_NO_KEY)
        return Fernet(self._key).encrypt(sealed.to_json().encode()).decode()

    def unseal(self, row: TokenRow) -> Sealed:
        from cryptography.fernet import Fernet, InvalidToken

        if row.sealed_text is None:
            return Sealed()
        if self._key is None:
            raise TokenKeyError(_NO_KEY)
        try:
            return Sealed.from_json(Fernet(self._key).decrypt(row.sealed_text.encode()).decode())
        except (InvalidToken, ValueError):
            raise TokenKeyError(
                f"the cached tokens of {'/'.join(row.key[1:])} cannot be decrypted with this "
                "key (the key changed?): use the key they were written with, or "
                f"`reconcile auth login {'/'.join(row.key[1:])}` again") from None

    # -- rows ---------------------------------------------------------------

    @contextmanager
    def _conn(self, *, write: bool) -> Iterator[Connection]:
        engine = self._writer if write else self._engine
        try:
            with translated(self._loc), engine.begin() as conn:
                yield conn
        except SQLAlchemyError as exc:
            raise explain(exc, self._loc) from None

    def get(self, key: ServerKey) -> TokenRow | None:
        tok = t.oauth_tokens
        with self._conn(write=False) as conn:
            row = conn.execute(select(tok).where(
                tok.c.kind == key[0], tok.c.namespace == key[1], tok.c.name == key[2])).first()
        return _row(row) if row is not None else None

    def all(self) -> list[TokenRow]:
        tok = t.oauth_tokens
        with self._conn(write=False) as conn:
            rows = conn.execute(select(tok).order_by(tok.c.namespace, tok.c.name,
                                                     tok.c.kind)).all()
        return [_row(r) for r in rows]

    def put(self, key: ServerKey, *, digest: str, grant: str, account: str | None,
            sealed: Sealed, access_expires_at: datetime | None,
            expect_generation: int | None) -> int | None:
        """Write tokens; the new generation, or None when another writer got there first.

        ``expect_generation`` None means "whatever is there" (a fresh login).
        """
        values = {
            "client_digest": digest, "grant": grant, "account": account,
            "sealed": self.seal(sealed), "access_expires_at": access_expires_at,
            "refresh_present": bool(sealed.refresh_token or sealed.msal_cache),
            "last_error": None, "last_error_permanent": False, "last_error_at": None,
            "updated_at": datetime.now(UTC),
        }
        return self._write(key, values, expect_generation)

    def record_error(self, key: ServerKey, *, digest: str, grant: str, account: str | None,
                     message: str, permanent: bool, expect_generation: int | None) -> None:
        values = {"client_digest": digest, "grant": grant, "account": account,
                  "last_error": message[:MAX_ERROR], "last_error_permanent": permanent,
                  "last_error_at": datetime.now(UTC), "updated_at": datetime.now(UTC)}
        self._write(key, values, expect_generation)

    def expire_access(self, key: ServerKey, generation: int) -> None:
        """Mark the stored access token as refused, so no process hands it out again."""
        tok = t.oauth_tokens
        with self._conn(write=True) as conn:
            conn.execute(update(tok).where(
                tok.c.kind == key[0], tok.c.namespace == key[1], tok.c.name == key[2],
                tok.c.generation == generation).values(access_expires_at=None))

    def _write(self, key: ServerKey, values: dict[str, Any], expect: int | None) -> int | None:
        tok = t.oauth_tokens
        where = (tok.c.kind == key[0], tok.c.namespace == key[1], tok.c.name == key[2])
        with self._conn(write=True) as conn:
            current = conn.execute(select(tok.c.generation).where(*where)).scalar()
            if current is None:
                if expect not in (None, 0):
                    return None
                row = {"kind": key[0], "namespace": key[1], "name": key[2], "generation": 1,
                       "refresh_present": False, "sealed": None, **values}
                try:
                    conn.execute(insert(tok).values(**row))
                except IntegrityError:  # another process inserted first
                    return None
                return 1
            if expect is not None and current != expect:
                return None
            changed = conn.execute(update(tok).where(*where, tok.c.generation == current)
                                   .values(generation=current + 1, **values)).rowcount
            return current + 1 if changed else None

    def delete(self, key: ServerKey) -> bool:
        from sqlalchemy import delete

        tok = t.oauth_tokens
        with self._conn(write=True) as conn:
            return bool(conn.execute(delete(tok).where(
                tok.c.kind == key[0], tok.c.namespace == key[1], tok.c.name == key[2])).rowcount)


def _row(row: Any) -> TokenRow:
    return TokenRow(
        key=(row.kind, row.namespace, row.name), client_digest=row.client_digest,
        grant=row.grant, account=row.account, access_expires_at=row.access_expires_at,
        refresh_present=bool(row.refresh_present), generation=row.generation,
        last_error=row.last_error, last_error_permanent=bool(row.last_error_permanent),
        last_error_at=row.last_error_at, updated_at=row.updated_at, sealed_text=row.sealed)
