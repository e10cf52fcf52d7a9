"""Stores and signed-in browsers for the console's screen tests.

Every screen test runs on SQLite and on PostgreSQL: ``console_store`` (empty) and
``store`` (one primary server per namespace applied) are built on the shared
``store_url`` fixture (tests/peers/postgres.py), which is parametrized over both.
``console_as(principal)`` is a browser signed in for real: a generated token in
a token table, the sign-in form, the session cookie; POSTs carry that session's
CSRF token (``csrf_for``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient

from reconciler.state import SqlStore, open_store

from .console_kit import applied_store, signed_in

Console = Callable[..., TestClient]


@pytest.fixture
def console_store(store_url: str) -> Iterator[SqlStore]:
    with open_store(store_url) as opened:
        yield opened  # type: ignore[misc]


@pytest.fixture
def store(store_url: str) -> Iterator[SqlStore]:
    yield from applied_store(store_url)


@pytest.fixture
def console_as(console_store: SqlStore) -> Console:
    def make(principal: object, **kw: object) -> TestClient:
        return signed_in(console_store, principal, **kw)  # type: ignore[arg-type]
    return make
