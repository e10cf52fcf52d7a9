"""Migration 0006: a store written before it takes ``heal`` and ``rollback`` revisions,
keeps every row and its hash chain, and still refuses a kind nobody writes."""

from __future__ import annotations

import pytest
from alembic import command
from peers.postgres import RawSql
from sqlalchemy.exc import IntegrityError

from reconciler.state import RevisionKind, SqlStore, open_store
from reconciler.state.location import create_store_engine, parse_location, writer_engine
from reconciler.state.migrate import SCHEMA_HEAD, alembic_config

from .kit import create, meta, res, update


def _downgrade(store_url: str, to: str) -> None:
    engine = create_store_engine(parse_location(store_url))
    try:
        with writer_engine(engine).begin() as conn:
            cfg = alembic_config()
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, to)
    finally:
        engine.dispose()


def test_an_older_store_takes_heal_and_rollback(store: SqlStore, store_url: str,
                                                raw_sql: RawSql) -> None:
    first = res("gmail", host="smtp.gmail.com")
    store.commit([create(first)], meta(), base_revision=0)  # rows other tables point at
    store.close()
    _downgrade(store_url, "0005")
    with pytest.raises(IntegrityError):
        raw_sql("UPDATE revisions SET kind = 'heal' WHERE number = 1")

    with open_store(store_url) as upgraded:
        assert upgraded.schema_revision == SCHEMA_HEAD
        second = res("gmail", host="smtp.example.net")
        upgraded.commit([update(first, second)], meta(kind=RevisionKind.HEAL), base_revision=1)
        upgraded.commit([update(second, first)], meta(kind=RevisionKind.ROLLBACK),
                        base_revision=2)
        assert [r.meta.kind for r in upgraded.revisions()] == [
            RevisionKind.ROLLBACK, RevisionKind.HEAL, RevisionKind.APPLY]
        assert upgraded.verify().ok
    with pytest.raises(IntegrityError):
        raw_sql("UPDATE revisions SET kind = 'bogus' WHERE number = 1")
