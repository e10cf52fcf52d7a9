"""Queue control (SPEC O13) in the store contract, on SQLite and PostgreSQL: hold,
release, retry now, cancel, requeue, the listing filters and the routing decision
kept with a message. Typed against ``Store``: nothing here needs the SQL side."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

from alembic import command

from reconciler.state import Store, open_store
from reconciler.state.base import AuditStatus, Completion, OutboxState, RoutingSnapshot
from reconciler.state.location import create_store_engine, parse_location, writer_engine
from reconciler.state.migrate import alembic_config
from reconciler.state.outbox_control import QueueFilter

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
S = OutboxState


def _note(n: int, to: str = "") -> dict[str, Any]:
    return {"module": "requests", "to": [{"email": to or f"user{n}@example.com"}],
            "subject": f"#{n}", "textBody": "x"}


def _add(store: Store, n: int, *, ns: str = "default", to: str = "",
         now: datetime = T0) -> int:
    return store.outbox.enqueue(_note(n, to), namespace=ns, idempotency_key=f"k{n}",
                                now=now).id


def _deferred(store: Store, id: int, server: str = "hr", until: datetime = T0 + timedelta(
        hours=1)) -> None:
    """Claim ``id`` and give it back for a retry, routed through ``server``."""
    [m] = store.outbox.claim("w", 1, 60, now=T0)
    assert m.id == id
    store.outbox.route(id, "w", RoutingSnapshot(1, server), {"via": "rule", "server": server})
    assert store.outbox.schedule_retry(id, "w", until, "451 try later", now=T0)


def _audit(store: Store, id: int) -> list[tuple[str, str, str]]:
    return [(e.status.value, e.reason, (e.details or {}).get("actor", ""))
            for e in reversed(store.audit.search(outbox_id=id))]


def test_a_held_message_is_never_claimed_until_released(store: Store) -> None:
    a, b = _add(store, 1), _add(store, 2)
    done = store.outbox.hold(QueueFilter(ids=(a,)), actor="ops-anna", reason="wrong text",
                             now=T0)
    assert done.changed == (a,) and done.refused == ()
    assert [m.id for m in store.outbox.claim("w", 10, 60, now=T0 + timedelta(days=1))] == [b]
    assert store.outbox.get(a).state is S.HELD  # type: ignore[union-attr]
    # releasing what is not held changes nothing and says what it is
    again = store.outbox.release_held(QueueFilter(ids=(a, b, 999)), actor="ops-anna", now=T0)
    assert again.changed == (a,) and again.refused == ((b, S.LEASED), (999, None))
    assert [m.id for m in store.outbox.claim("w2", 10, 60, now=T0)] == [a]
    assert _audit(store, a) == [("SEND_HELD", "wrong text", "ops-anna"),
                                ("SEND_RELEASED", "released by an operator", "ops-anna")]


def test_cancel_wins_before_a_claim_or_reports_the_state_it_lost_to(store: Store) -> None:
    a, b, c = _add(store, 1), _add(store, 2), _add(store, 3)
    assert store.outbox.cancel(QueueFilter(ids=(a,)), actor="bob", reason="duplicate",
                               now=T0).changed == (a,)
    claimed = store.outbox.claim("w", 10, 60, now=T0)
    assert [m.id for m in claimed] == [b, c]  # a cancelled message is never handed out
    # in flight: left alone, and the caller learns why
    assert store.outbox.cancel(QueueFilter(ids=(b,)), actor="bob", reason="x",
                               now=T0).refused == ((b, S.LEASED),)
    store.outbox.complete(b, "w", S.SENT, now=T0)
    assert store.outbox.cancel(QueueFilter(ids=(b,)), actor="bob", reason="x",
                               now=T0).refused == ((b, S.SENT),)
    assert store.outbox.get(a).state is S.CANCELLED  # type: ignore[union-attr]
    [entry] = store.audit.search(status=AuditStatus.SEND_CANCELLED)
    assert (entry.outbox_id, entry.reason, entry.details) == (
        a, "duplicate", {"actor": "bob", "previousState": "queued"})
    assert entry.direction.value == "outgoing"


def test_retry_now_and_requeue_make_deferred_mail_due_through_another_server(
        store: Store) -> None:
    a, b = _add(store, 1), _add(store, 2)
    _deferred(store, a, "hr")
    _deferred(store, b, "it")
    assert store.outbox.claim("w", 10, 60, now=T0) == []  # both wait for an hour
    by_server = QueueFilter(server="hr", states=(S.RETRY_WAIT,))
    assert store.outbox.retry_now(by_server, actor="ops", now=T0).changed == (a,)
    assert [m.id for m in store.outbox.claim("w", 10, 60, now=T0)] == [a]
    moved = store.outbox.requeue(QueueFilter(server="it"), RoutingSnapshot(7, "backup"),
                                 actor="ops", reason="it relay down", now=T0)
    assert moved.changed == (b,)
    [m] = store.outbox.claim("w", 10, 60, now=T0)
    assert m.routing == RoutingSnapshot(7, "backup")
    assert m.decision is not None and m.decision["via"] == "requeue"
    [entry] = store.audit.search(status=AuditStatus.SEND_REQUEUED)
    assert (entry.server, entry.details) == ("it", {"actor": "ops", "previousState":
                                                    "retry_wait", "toServer": "backup"})


def test_listing_filters_and_counts_by_state(store: Store) -> None:
    old = _add(store, 1, to="Jane@Example.com", now=T0 - timedelta(hours=3))
    hr = _add(store, 2, ns="hr")
    _add(store, 3)
    store.outbox.hold(QueueFilter(ids=(hr,)), actor="ops", now=T0)
    ids = lambda f: [m.id for m in store.outbox.search(f)]  # noqa: E731
    assert ids(QueueFilter(recipient="jane@example.COM")) == [old]
    assert ids(QueueFilter(recipient="jane@example.co")) == []
    assert ids(QueueFilter(created_before=T0 - timedelta(hours=1))) == [old]
    assert ids(QueueFilter(namespace="hr")) == ids(QueueFilter(states=(S.HELD,))) == [hr]
    counts = store.outbox.count(QueueFilter())
    assert (counts[S.QUEUED], counts[S.HELD], counts[S.SENT]) == (2, 1, 0)
    assert store.outbox.count(QueueFilter(recipient="jane@example.com"))[S.QUEUED] == 1


def test_the_routing_decision_is_kept_with_the_result(store: Store) -> None:
    a = _add(store, 1)
    assert [m.id for m in store.outbox.claim("w", 1, 60, now=T0)] == [a]
    decision = {"via": "primary", "server": "main", "rules": [
        {"rule": "hr", "verdict": "server disabled"}]}
    store.outbox.complete_many("w", [Completion(a, S.SENT, routing=RoutingSnapshot(3, "main"),
                                                decision=decision)], now=T0)
    kept = store.outbox.get(a)
    assert kept is not None and kept.routing == RoutingSnapshot(3, "main")
    assert kept.decision == decision


def test_cancel_racing_claims_either_wins_or_is_told_never_both(store_url: str) -> None:
    with open_store(store_url) as setup:
        ids = [_add(setup, n) for n in range(40)]
    claimed: list[int] = []
    cancelled: list[int] = []
    lost: list[tuple[int, OutboxState | None]] = []

    def claimer() -> None:
        with open_store(store_url) as s:
            while len(claimed) + len(cancelled) < len(ids):
                claimed.extend(m.id for m in s.outbox.claim("w", 3, 60))

    def canceller() -> None:
        with open_store(store_url) as s:
            for i in ids:
                result = s.outbox.cancel(QueueFilter(ids=(i,)), actor="ops", reason="race")
                cancelled.extend(result.changed)
                if not result.changed:
                    lost.extend(result.refused)

    threads = [threading.Thread(target=claimer), threading.Thread(target=canceller)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert sorted(claimed + cancelled) == ids  # each exactly once
    assert all(state is S.LEASED for _, state in lost)  # lost to a claim: told so
    with open_store(store_url) as s:
        assert s.audit.count(status=AuditStatus.SEND_CANCELLED) == len(cancelled)


def test_migration_0009_keeps_queued_mail_and_its_files(store_url: str) -> None:
    with open_store(store_url) as s:
        kept = s.outbox.enqueue({**_note(1), "attachments": [
            {"name": "a.txt", "data": b"file bytes"}]}, namespace="default",
            idempotency_key="k").id
    engine = create_store_engine(parse_location(store_url))
    try:
        with writer_engine(engine).begin() as conn:
            cfg = alembic_config()
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "0005")
    finally:
        engine.dispose()
    with open_store(store_url) as upgraded:  # 0006-0009 again, on a store holding mail
        assert upgraded.outbox.notification(kept)["attachments"][0]["data"] == b"file bytes"
        assert upgraded.outbox.hold(QueueFilter(ids=(kept,)), actor="ops").changed == (kept,)
        assert upgraded.outbox.get(kept).state is S.HELD  # type: ignore[union-attr]
