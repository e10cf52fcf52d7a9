"""Which SQLite outbox commits wait for the disk: the intake's (acknowledged to a client)
do; the daemon's bookkeeping (claims, renewals, routes, results, releases) does not,
and leaves the pooled connection as it found it for the next intake."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from reconciler.mail.envelope import Notification
from reconciler.state import SqlStore, open_store
from reconciler.state.base import Completion, EnqueueRequest, OutboxState, RoutingSnapshot

FULL, NORMAL = 2, 1


def _request(key: str) -> EnqueueRequest:
    return EnqueueRequest(Notification.model_validate(
        {"module": "request", "namespace": "default", "to": ["jane@corp.example"],
         "subject": "s", "textBody": "t"}), "default", idempotency_key=key)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqlStore]:
    with open_store(str(tmp_path / "state.db")) as opened:
        yield opened


@pytest.fixture
def commits(store: SqlStore) -> Iterator[list[int]]:
    """The connection's ``synchronous`` level at every commit of the store."""
    seen: list[int] = []

    def on_commit(conn: Any) -> None:
        raw = conn.connection.dbapi_connection
        seen.append(int(raw.execute("PRAGMA synchronous").fetchone()[0]))

    engine = store._engine  # the store's one engine: its writer shares the pool
    event.listen(engine, "commit", on_commit)
    yield seen
    event.remove(engine, "commit", on_commit)


def test_only_the_intake_commit_waits_for_the_disk(store: SqlStore,
                                                   commits: list[int]) -> None:
    outbox = store.outbox
    outbox.enqueue_many([_request("a"), _request("b")])
    assert commits == [FULL]

    commits.clear()
    first, second = outbox.claim("w1", 10, 60)
    outbox.renew("w1", [first.id, second.id], 60)
    outbox.route(first.id, "w1", RoutingSnapshot(1, "smtp"))
    outbox.complete_many("w1", [Completion(first.id, OutboxState.SENT)])
    outbox.release("w1")
    assert commits == [NORMAL] * 5

    commits.clear()
    outbox.enqueue_many([_request("c")])  # the same pooled connection, synced again
    assert commits == [FULL]
    assert outbox.get(first.id).state == OutboxState.SENT  # type: ignore[union-attr]
    assert outbox.get(second.id).state == OutboxState.QUEUED  # type: ignore[union-attr]
