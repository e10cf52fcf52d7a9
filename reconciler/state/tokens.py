"""``store.tokens``: the ``oauth_tokens`` rows (see :class:`~reconciler.state.contract.Tokens`).

Tokens arrive sealed (``oauth.cache`` holds the key): this module never sees one
in clear. Why the rows are in the store at all: the daemon, `reconcile auth login`
and `reconcile test-connection` run as different processes, possibly on different
machines against one PostgreSQL, and a refresh token obtained by one must be
usable by all.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError

from reconciler.state import schema as t
from reconciler.state.codec import from_row
from reconciler.state.contract import TokenKey, TokenRow, TokenWrite
from reconciler.state.location import StoreArea

MAX_ERROR = 1000
tok = t.oauth_tokens


def _key_is(key: TokenKey) -> tuple[Any, ...]:
    return tok.c.kind == key[0], tok.c.namespace == key[1], tok.c.name == key[2]


class SqlTokens(StoreArea):
    def get(self, key: TokenKey) -> TokenRow | None:
        with self._read() as conn:
            row = conn.execute(select(tok).where(*_key_is(key))).first()
        return _row(row) if row is not None else None

    def all(self) -> list[TokenRow]:
        with self._read() as conn:
            rows = conn.execute(select(tok).order_by(tok.c.namespace, tok.c.name,
                                                     tok.c.kind)).all()
        return [_row(r) for r in rows]

    def write(self, key: TokenKey, write: TokenWrite, *,
              expect_generation: int | None) -> int | None:
        now = datetime.now(UTC)
        values: dict[str, Any] = {"client_digest": write.client_digest, "grant": write.grant,
                                  "account": write.account, "updated_at": now}
        if write.error is None:  # new tokens: any earlier error is over
            values.update(sealed=write.sealed, access_expires_at=write.access_expires_at,
                          refresh_present=write.refresh_present, last_error=None,
                          last_error_permanent=False, last_error_at=None)
        else:
            values.update(last_error=write.error[:MAX_ERROR],
                          last_error_permanent=write.error_permanent, last_error_at=now)
        with self._write() as conn:
            current = conn.execute(select(tok.c.generation).where(*_key_is(key))).scalar()
            if current is None:
                if expect_generation not in (None, 0):
                    return None
                row = {"kind": key[0], "namespace": key[1], "name": key[2], "generation": 1,
                       "refresh_present": False, "sealed": None, **values}
                try:
                    conn.execute(insert(tok).values(**row))
                except IntegrityError:  # another process inserted first
                    return None
                return 1
            if expect_generation is not None and current != expect_generation:
                return None
            changed = conn.execute(update(tok).where(*_key_is(key), tok.c.generation == current)
                                   .values(generation=current + 1, **values)).rowcount
            return current + 1 if changed else None

    def expire_access(self, key: TokenKey, generation: int) -> None:
        """Mark the stored access token as refused, so no process hands it out again."""
        with self._write() as conn:
            conn.execute(update(tok).where(*_key_is(key), tok.c.generation == generation)
                         .values(access_expires_at=None))


def _row(row: Any) -> TokenRow:
    return from_row(TokenRow, row, key=(row.kind, row.namespace, row.name),
                    sealed_text=row.sealed)
