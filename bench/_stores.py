"""Throw-away stores for benchmarks: a SQLite file in a temp folder, or a fresh
schema in a PostgreSQL database (dropped afterwards)."""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def sqlite_url(prefix: str) -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix=f"{prefix}-") as tmp:
        yield str(Path(tmp) / "state.db")


@contextmanager
def postgres_url(base: str, prefix: str) -> Iterator[str | None]:
    """A URL whose search path is a new schema; None (and a line saying why) when
    PostgreSQL cannot be reached, so the SQLite figures still print."""
    import psycopg

    schema = f"{prefix}_{uuid.uuid4().hex[:8]}"
    try:
        admin = psycopg.connect(base, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        print(f"postgresql  skipped: cannot connect ({str(exc).strip().splitlines()[0]})")
        yield None
        return
    with admin:
        admin.execute(f'CREATE SCHEMA "{schema}"')
        try:
            sep = "&" if "?" in base else "?"
            yield f"{base}{sep}options=-csearch_path%3D{schema}"
        finally:
            admin.execute(f'DROP SCHEMA "{schema}" CASCADE')
