"""open_store(create=False): a store that is not there is an error, never created."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect

from reconciler.state import StoreMissing, open_store


def test_a_missing_sqlite_file_is_not_created(tmp_path: Path) -> None:
    typo = tmp_path / "typo" / "state.db"
    with pytest.raises(StoreMissing, match=f"no state store at {typo}"):
        open_store(typo, create=False)
    assert list(tmp_path.iterdir()) == []


def test_an_existing_store_opens_without_create(store_url: str) -> None:
    with open_store(store_url) as made:
        lineage = made.lineage
    with open_store(store_url, create=False) as store:
        assert store.lineage == lineage and store.head() == 0


def test_an_uninitialised_database_is_not_initialised(postgres_url: str) -> None:
    with pytest.raises(StoreMissing, match="is not initialised"):
        open_store(postgres_url, create=False)
    engine = create_engine(postgres_url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.connect() as conn:
            assert inspect(conn).get_table_names() == []
    finally:
        engine.dispose()


def test_an_empty_sqlite_file_is_not_initialised(tmp_path: Path) -> None:
    empty = tmp_path / "state.db"
    empty.touch()
    with pytest.raises(StoreMissing, match="is not initialised"):
        open_store(empty, create=False)
    assert empty.stat().st_size == 0
