"""The durable outbox (SPEC O1, O7, O12, X4), every test on SQLite and PostgreSQL.

Concurrency tests use separate store objects (their own connections) per
thread or process, the way separate daemons would.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
from alembic import command
from peers.postgres import RawSql

import reconciler
from reconciler.mail.envelope import Notification
from reconciler.state import SqlStore, open_store
from reconciler.state.base import (
    AuditEntry,
    AuditStatus,
    Completion,
    EnqueueRequest,
    LeaseLost,
    OutboxState,
    RoutingSnapshot,
    UnknownMessage,
)
from reconciler.state.location import create_store_engine, parse_location, writer_engine
from reconciler.state.migrate import SCHEMA_HEAD, alembic_config

from .kit import create, meta, res

REPO = Path(next(iter(reconciler.__path__))).parent
T0 = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
T = TypeVar("T")


def note(n: int = 0, **extra: Any) -> dict[str, Any]:
    return {
        "module": "requests",
        "namespace": "default",
        "context": {"department": "IT"},
        "to": [{"email": f"user{n}@example.com", "name": f"User {n}"}],
        "subject": f"Request #{n} updated",
        "textBody": "Your request was updated.",
        **extra,
    }


def enqueue_many(store: SqlStore, count: int, now: datetime = T0) -> list[int]:
    return [store.outbox.enqueue(note(i), namespace="default", idempotency_key=f"k-{i}",
                                 now=now).id for i in range(count)]


def in_threads(count: int, work: Callable[[int], T]) -> list[T]:
    """Run ``work(i)`` in ``count`` threads started together; re-raise the first failure."""
    start = threading.Barrier(count)
    results: dict[int, T] = {}
    failures: list[BaseException] = []

    def run(i: int) -> None:
        try:
            start.wait()
            results[i] = work(i)
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    if failures:
        raise failures[0]
    return [results[i] for i in range(count)]


# -- intake and idempotency ----------------------------------------------------------


def test_enqueue_is_idempotent_per_namespace(store: SqlStore) -> None:
    outbox = store.outbox
    first = outbox.enqueue(note(1), namespace="default", idempotency_key="ticket-42")
    again = outbox.enqueue(note(2), namespace="default", idempotency_key="ticket-42")
    other_ns = outbox.enqueue(note(1), namespace="acme", idempotency_key="ticket-42")
    assert (first.duplicate, again.duplicate, other_ns.duplicate) == (False, True, False)
    assert again.id == first.id != other_ns.id
    # the first payload stands; the duplicate wrote nothing
    stored = outbox.get(first.id)
    assert stored is not None and stored.payload["subject"] == "Request #1 updated"
    assert outbox.find("default", "ticket-42") == stored
    # notifications without a key are never de-duplicated
    a = outbox.enqueue(note(3), namespace="default", idempotency_key=None)
    b = outbox.enqueue(note(3), namespace="default", idempotency_key=None)
    assert a.id != b.id and not a.duplicate and not b.duplicate
    assert outbox.depth()[OutboxState.QUEUED] == 4


def test_enqueue_many_commits_a_batch_and_keeps_keys_unique(store: SqlStore,
                                                            raw_sql: RawSql) -> None:
    known = store.outbox.enqueue(note(0), namespace="default", idempotency_key="known").id
    results = store.outbox.enqueue_many([
        EnqueueRequest(note(1), "default", "a"),
        EnqueueRequest(note(2), "default", "known"),
        EnqueueRequest(note(3), "default", "a"),  # repeated inside the batch
        EnqueueRequest(note(4, attachments=[{"name": "f", "data": b"x"}]), "acme", None,
                       RoutingSnapshot(2, "relay")),
    ])
    assert [r.duplicate for r in results] == [False, True, True, False]
    assert results[1].id == known and results[2].id == results[0].id
    assert raw_sql("SELECT count(*) FROM outbox") == [(3,)]
    last = store.outbox.get(results[3].id)
    assert last is not None and last.routing == RoutingSnapshot(2, "relay")
    assert [a.size for a in last.attachments] == [1]
    assert store.outbox.enqueue_many([]) == []


def test_stored_message_keeps_everything_the_worker_needs(store: SqlStore) -> None:
    routing = RoutingSnapshot(config_revision=7, server="gmail")
    r = store.outbox.enqueue(note(1), namespace="default", idempotency_key="k", routing=routing,
                             now=T0)
    m = store.outbox.get(r.id)
    assert m is not None
    assert (m.namespace, m.idempotency_key, m.module, m.state, m.attempts) == (
        "default", "k", "requests", OutboxState.QUEUED, 0)
    assert m.routing == routing
    assert m.created_at == m.updated_at == m.next_attempt_at == T0
    assert m.payload == note(1) and m.attachments == ()
    assert m.lease_owner is m.lease_expires_at is m.first_attempt_at is m.last_error is None
    assert store.outbox.get(r.id + 1000) is None
    with pytest.raises(UnknownMessage):
        store.outbox.notification(r.id + 1000)


def test_concurrent_enqueuers_with_one_key_store_one_row(
    store: SqlStore, store_url: str, raw_sql: RawSql
) -> None:
    stores = [open_store(store_url) for _ in range(6)]
    try:
        results = in_threads(6, lambda i: stores[i].outbox.enqueue(
            note(i), namespace="default", idempotency_key="same-key"))
    finally:
        for s in stores:
            s.close()
    assert len({r.id for r in results}) == 1
    assert sorted(r.duplicate for r in results) == [False] + [True] * 5
    assert raw_sql("SELECT count(*) FROM outbox") == [(1,)]


# Opens the store, says "ready", enqueues when told, prints the result, then
# waits (the crash test kills it there).
ENQUEUER = """
import sys
from reconciler.state import open_store

store = open_store(sys.argv[1])
print("ready", flush=True)
sys.stdin.readline()
attachment = {"name": "report.pdf", "contentType": "application/pdf", "data": b"%PDF-1.7 ..."}
result = store.outbox.enqueue(
    {"module": "requests", "subject": "from " + sys.argv[3], "attachments": [attachment]},
    namespace="default", idempotency_key=sys.argv[2],
)
print(result.id, int(result.duplicate), flush=True)
sys.stdin.read()
"""


@contextmanager
def enqueuers(store_url: str, key: str, count: int) -> Iterator[list[subprocess.Popen[str]]]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [
        str(REPO), os.environ.get("PYTHONPATH")])))
    procs = [
        subprocess.Popen([sys.executable, "-c", ENQUEUER, store_url, key, f"p{i}"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
                         cwd=REPO)
        for i in range(count)
    ]
    try:
        for p in procs:
            assert p.stdout is not None
            assert p.stdout.readline().strip() == "ready", f"enqueuer failed ({p.poll()})"
        yield procs
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait(timeout=60)
            for stream in (p.stdin, p.stdout):
                if stream is not None:
                    stream.close()


def go(procs: list[subprocess.Popen[str]]) -> list[tuple[int, bool]]:
    for p in procs:
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    out = []
    for p in procs:
        assert p.stdout is not None
        line = p.stdout.readline().split()
        assert len(line) == 2, f"enqueuer failed ({p.poll()})"
        out.append((int(line[0]), line[1] == "1"))
    return out


def test_concurrent_enqueuers_in_separate_processes_store_one_row(
    store: SqlStore, store_url: str, raw_sql: RawSql
) -> None:
    with enqueuers(store_url, "shared-key", 2) as procs:
        results = go(procs)
    assert len({i for i, _ in results}) == 1
    assert sorted(dup for _, dup in results) == [False, True]
    assert raw_sql("SELECT count(*) FROM outbox") == [(1,)]
    assert raw_sql("SELECT count(*) FROM outbox_attachments") == [(1,)]


def test_accepted_message_survives_the_process_being_killed(
    store: SqlStore, store_url: str
) -> None:
    store.close()
    with enqueuers(store_url, "crash-key", 1) as procs:
        [(message_id, duplicate)] = go(procs)
        procs[0].kill()  # SIGKILL right after "accepted": no clean-up of any kind runs
        procs[0].wait(timeout=60)
    assert not duplicate
    with open_store(store_url) as reopened:
        m = reopened.outbox.get(message_id)
        assert m is not None and m.state is OutboxState.QUEUED
        assert m.payload["subject"] == "from p0"
        full = reopened.outbox.notification(message_id)
        assert full["attachments"][0]["data"] == b"%PDF-1.7 ..."
        again = reopened.outbox.enqueue({"module": "requests"}, namespace="default",
                                        idempotency_key="crash-key")
        assert again.id == message_id and again.duplicate


# -- claiming and leases -----------------------------------------------------------


def test_claim_leases_due_messages_oldest_first(store: SqlStore) -> None:
    ids = enqueue_many(store, 5)
    later = store.outbox.enqueue(note(9), namespace="default", idempotency_key="later",
                                 now=T0 + timedelta(minutes=5)).id
    got = store.outbox.claim("daemon-a", limit=3, lease_seconds=3600,
                             now=T0 + timedelta(seconds=1))
    assert [m.id for m in got] == ids[:3]
    for m in got:
        assert (m.state, m.lease_owner, m.attempts) == (OutboxState.LEASED, "daemon-a", 1)
        assert m.lease_expires_at == T0 + timedelta(seconds=3601)
        assert m.first_attempt_at == T0 + timedelta(seconds=1)
    rest = store.outbox.claim("daemon-b", limit=10, lease_seconds=3600,
                              now=T0 + timedelta(seconds=2))
    assert [m.id for m in rest] == ids[3:]  # `later` is not due yet; leased ones are taken
    assert store.outbox.claim("daemon-b", 10, 60, now=T0 + timedelta(seconds=3)) == []
    due_later = store.outbox.claim("daemon-b", 10, 60, now=T0 + timedelta(minutes=5))
    assert [m.id for m in due_later] == [later]
    assert store.outbox.claim("daemon-b", 0, 60) == []
    assert store.outbox.depth()[OutboxState.LEASED] == 6


def test_expired_lease_is_claimed_again_and_the_stale_owner_cannot_finish(
    store: SqlStore
) -> None:
    [mid] = enqueue_many(store, 1)
    [m] = store.outbox.claim("daemon-a", 10, lease_seconds=30, now=T0)
    assert store.outbox.claim("daemon-b", 10, 30, now=T0 + timedelta(seconds=29)) == []
    # daemon-a crashed or hung: after the lease runs out anyone may take the message
    [taken] = store.outbox.claim("daemon-b", 10, 30, now=T0 + timedelta(seconds=30))
    assert (taken.id, taken.lease_owner, taken.attempts) == (mid, "daemon-b", 2)
    assert taken.first_attempt_at == m.first_attempt_at == T0
    # daemon-a wakes up: none of its writes may land
    assert not store.outbox.complete(mid, "daemon-a", OutboxState.FAILED, error="late")
    assert not store.outbox.schedule_retry(mid, "daemon-a", T0 + timedelta(hours=1), "late")
    assert store.outbox.renew("daemon-a", [mid], 30) == []
    assert store.outbox.release("daemon-a") == 0
    with pytest.raises(LeaseLost):
        store.outbox.route(mid, "daemon-a", RoutingSnapshot(1, "gmail"))
    current = store.outbox.get(mid)
    assert current is not None and (current.state, current.lease_owner) == (
        OutboxState.LEASED, "daemon-b")
    assert store.outbox.complete(mid, "daemon-b", OutboxState.SENT)
    done = store.outbox.get(mid)
    assert done is not None and done.state is OutboxState.SENT and done.lease_owner is None
    assert not store.outbox.complete(mid, "daemon-b", OutboxState.SENT)  # only once


def test_renew_keeps_a_slow_send_leased(store: SqlStore) -> None:
    ids = enqueue_many(store, 2)
    store.outbox.claim("daemon-a", 10, lease_seconds=30, now=T0)
    assert store.outbox.renew("daemon-a", [ids[0]], 120, now=T0 + timedelta(seconds=20)) == [
        ids[0]]
    stolen = store.outbox.claim("daemon-b", 10, 30, now=T0 + timedelta(seconds=60))
    assert [m.id for m in stolen] == [ids[1]]


@pytest.mark.parametrize("claimers", [2, 4])
def test_concurrent_claimers_never_share_a_message(
    store: SqlStore, store_url: str, claimers: int
) -> None:
    total = 200
    ids = set(enqueue_many(store, total))
    stores = [open_store(store_url) for _ in range(claimers)]

    def drain(i: int) -> list[int]:
        mine: list[int] = []
        owner = f"daemon-{i}"
        while batch := stores[i].outbox.claim(owner, limit=7, lease_seconds=300):
            mine.extend(m.id for m in batch)
            result = stores[i].outbox.complete_many(
                owner, [Completion(m.id, OutboxState.SENT) for m in batch])
            assert result.lost == ()
        return mine

    try:
        per_claimer = in_threads(claimers, drain)
    finally:
        for s in stores:
            s.close()
    claimed = [mid for got in per_claimer for mid in got]
    assert len(claimed) == len(set(claimed)), "a message was claimed twice"
    assert set(claimed) == ids
    assert store.outbox.depth(finished=True)[OutboxState.SENT] == total


def test_release_on_shutdown_puts_leased_messages_back(store: SqlStore) -> None:
    ids = enqueue_many(store, 4)
    store.outbox.claim("daemon-a", 3, 60, now=T0)
    # one of them failed once before: it goes back to retry_wait, attempts intact
    assert store.outbox.schedule_retry(ids[0], "daemon-a", T0 + timedelta(seconds=10), "busy",
                                       now=T0)
    [other] = store.outbox.claim("daemon-b", 1, 60, now=T0)
    assert other.id == ids[3]
    [retried] = store.outbox.claim("daemon-a", 1, 60, now=T0 + timedelta(seconds=10))
    assert (retried.id, retried.attempts) == (ids[0], 2)
    assert store.outbox.release("daemon-a", now=T0 + timedelta(seconds=11)) == 3
    states = {i: store.outbox.get(i) for i in ids}
    assert states[ids[0]].state is OutboxState.RETRY_WAIT  # type: ignore[union-attr]
    assert states[ids[0]].attempts == 1  # type: ignore[union-attr]
    for i in ids[1:3]:
        m = states[i]
        assert m is not None and (m.state, m.attempts, m.lease_owner, m.first_attempt_at) == (
            OutboxState.QUEUED, 0, None, None)
    assert states[ids[3]].lease_owner == "daemon-b"  # type: ignore[union-attr]
    again = store.outbox.claim("daemon-c", 10, 60, now=T0 + timedelta(seconds=12))
    assert sorted(m.id for m in again) == ids[:3]  # due at once, not after the old lease


def test_release_of_some_ids_only(store: SqlStore) -> None:
    ids = enqueue_many(store, 3)
    store.outbox.claim("daemon-a", 3, 60, now=T0)
    assert store.outbox.release("daemon-a", ids=[ids[2]], now=T0) == 1
    assert store.outbox.depth()[OutboxState.LEASED] == 2


def test_retry_waits_for_next_attempt_at(store: SqlStore) -> None:
    [mid] = enqueue_many(store, 1)
    store.outbox.claim("daemon-a", 1, 60, now=T0)
    retry_at = T0 + timedelta(minutes=2)
    assert store.outbox.schedule_retry(
        mid, "daemon-a", retry_at, "421 4.7.0 try again later (AUTH PLAIN AGFsaWNlAHMzY3JldA==)",
        now=T0 + timedelta(seconds=1))
    m = store.outbox.get(mid)
    assert m is not None and (m.state, m.next_attempt_at, m.lease_owner) == (
        OutboxState.RETRY_WAIT, retry_at, None)
    assert m.last_error is not None and "421 4.7.0" in m.last_error
    assert "AGFsaWNlAHMzY3JldA==" not in m.last_error  # redacted on the way in
    assert store.outbox.claim("daemon-b", 10, 60, now=retry_at - timedelta(microseconds=1)) == []
    [again] = store.outbox.claim("daemon-b", 10, 60, now=retry_at)
    assert (again.id, again.attempts, again.first_attempt_at) == (mid, 2, T0)


def test_complete_many_is_one_group_commit_with_its_audit(store: SqlStore,
                                                          raw_sql: RawSql) -> None:
    ids = enqueue_many(store, 4)
    store.outbox.claim("daemon-a", 3, 60, now=T0)
    later = T0 + timedelta(minutes=1)
    result = store.outbox.complete_many("daemon-a", [
        Completion(ids[0], OutboxState.SENT),
        Completion(ids[1], OutboxState.FAILED, error="550 5.1.1 no such user"),
        Completion(ids[2], OutboxState.RETRY_WAIT, error="timeout", next_attempt_at=later),
        Completion(ids[3], OutboxState.SENT),  # never claimed by daemon-a
    ], audit=[
        AuditEntry(AuditStatus.SENT, outbox_id=ids[0], recipient="user0@example.com"),
        AuditEntry(AuditStatus.SEND_FAILED, "550 5.1.1 no such user", outbox_id=ids[1]),
        AuditEntry(AuditStatus.RETRYING, "timeout", outbox_id=ids[2]),
    ], now=T0)
    assert result.done == tuple(ids[:3]) and result.lost == (ids[3],)
    states = [store.outbox.get(i).state for i in ids]  # type: ignore[union-attr]
    assert states == [OutboxState.SENT, OutboxState.FAILED, OutboxState.RETRY_WAIT,
                      OutboxState.QUEUED]
    assert store.outbox.get(ids[2]).next_attempt_at == later  # type: ignore[union-attr]
    assert store.outbox.get(ids[0]).next_attempt_at == T0  # type: ignore[union-attr]
    assert raw_sql("SELECT count(*) FROM audit") == [(3,)]
    assert store.outbox.depth() == {
        OutboxState.QUEUED: 1, OutboxState.LEASED: 0, OutboxState.RETRY_WAIT: 1,
        OutboxState.HELD: 0}
    assert store.outbox.depth(finished=True) == {
        OutboxState.QUEUED: 1, OutboxState.LEASED: 0, OutboxState.RETRY_WAIT: 1,
        OutboxState.HELD: 0, OutboxState.SENT: 1, OutboxState.FAILED: 1, OutboxState.IGNORED: 0,
        OutboxState.CANCELLED: 0}


def test_results_are_checked_before_anything_is_written(store: SqlStore) -> None:
    [mid] = enqueue_many(store, 1)
    store.outbox.claim("daemon-a", 1, 60)
    with pytest.raises(ValueError, match="sent, failed or ignored"):
        store.outbox.complete(mid, "daemon-a", OutboxState.QUEUED)
    with pytest.raises(ValueError, match="next_attempt_at"):
        store.outbox.complete_many("daemon-a", [Completion(mid, OutboxState.RETRY_WAIT)])
    with pytest.raises(ValueError, match="twice"):
        store.outbox.complete_many("daemon-a", [Completion(mid, OutboxState.SENT)] * 2)
    with pytest.raises(ValueError, match="1-200"):
        store.outbox.enqueue(note(1), namespace="default", idempotency_key="k" * 201)
    with pytest.raises(ValueError, match="namespace"):
        store.outbox.enqueue(note(1), namespace="", idempotency_key="k")
    with pytest.raises(ValueError):
        store.outbox.claim("", 1, 60)
    with pytest.raises(ValueError):
        store.outbox.claim("daemon-a", 1, 0)
    assert store.outbox.get(mid).state is OutboxState.LEASED  # type: ignore[union-attr]


# -- routing snapshot (O12) --------------------------------------------------------


def test_a_message_keeps_the_routing_it_was_first_given(store: SqlStore) -> None:
    [mid] = enqueue_many(store, 1)
    store.outbox.claim("daemon-a", 1, 60, now=T0)
    first = store.outbox.route(mid, "daemon-a", RoutingSnapshot(3, "gmail"))
    assert first == RoutingSnapshot(3, "gmail")
    store.outbox.schedule_retry(mid, "daemon-a", T0, "busy", now=T0)
    [again] = store.outbox.claim("daemon-a", 1, 60, now=T0)
    assert again.routing == first
    # a later revision routes elsewhere, but the message keeps what it had (hot reload)
    assert store.outbox.route(mid, "daemon-a", RoutingSnapshot(4, "office365")) == first
    with pytest.raises(LeaseLost):
        store.outbox.route(mid, "daemon-b", first)
    with pytest.raises(UnknownMessage):
        store.outbox.route(mid + 1000, "daemon-a", first)


# -- attachments ------------------------------------------------------------------


def test_a_20_mb_attachment_round_trips_byte_for_byte(store: SqlStore, raw_sql: RawSql) -> None:
    data = os.urandom(20 * 1024 * 1024)
    sent = Notification.model_validate({
        **note(1), "attachments": [
            {"name": "scan.tiff", "contentType": "image/tiff", "data": data},
            {"name": "notes.txt", "contentType": "text/plain", "data": b"hello"},
        ]})
    r = store.outbox.enqueue(sent, namespace="default", idempotency_key="big")
    [m] = store.outbox.claim("daemon-a", 10, 60)
    # claims stay light: the files are listed, their bytes are not loaded
    assert [(a.name, a.content_type, a.size) for a in m.attachments] == [
        ("scan.tiff", "image/tiff", len(data)), ("notes.txt", "text/plain", 5)]
    assert all("data" not in a for a in m.payload["attachments"])
    back = Notification.model_validate(store.outbox.notification(r.id))
    assert back == sent
    assert raw_sql("SELECT max(size) FROM outbox_attachments") == [(len(data),)]


def test_base64_attachments_from_json_intake_are_stored_as_bytes(store: SqlStore) -> None:
    data = bytes(range(256)) * 3
    as_json = Notification.model_validate({
        **note(1), "attachments": [{"name": "a.bin", "data": data}]}).model_dump(
        mode="json", by_alias=True)
    assert isinstance(as_json["attachments"][0]["data"], str)
    r = store.outbox.enqueue(as_json, namespace="default", idempotency_key="json")
    assert store.outbox.notification(r.id)["attachments"][0]["data"] == data
    with pytest.raises(ValueError, match="base64"):
        store.outbox.enqueue({"module": "m", "attachments": [{"name": "x", "data": "***"}]},
                             namespace="default", idempotency_key="bad")
    assert store.outbox.find("default", "bad") is None


def test_purge_removes_finished_messages_and_their_files(store: SqlStore,
                                                         raw_sql: RawSql) -> None:
    ids = [store.outbox.enqueue(note(i, attachments=[{"name": "f", "data": b"x"}]),
                                namespace="default", idempotency_key=f"p{i}", now=T0).id
           for i in range(3)]
    store.outbox.claim("daemon-a", 2, 60, now=T0)
    store.outbox.complete(ids[0], "daemon-a", OutboxState.SENT, now=T0)
    assert store.outbox.purge(T0 + timedelta(days=7)) == 1  # leased and queued stay
    assert store.outbox.get(ids[0]) is None
    assert raw_sql("SELECT count(*) FROM outbox_attachments") == [(2,)]


# -- schema migration -------------------------------------------------------------


def test_migration_0002_keeps_a_0001_store_intact(store: SqlStore, store_url: str,
                                                   raw_sql: RawSql) -> None:
    store.commit([create(res("gmail", host="smtp.gmail.com"))], meta(), base_revision=0)
    store.status_put(res("gmail").key, {"health": "reachable"})
    before = (store.lineage, store.snapshot(), store.revisions())
    store.close()
    # Take the database back to what reconcile wrote before the outbox existed.
    loc = parse_location(store_url)
    engine = create_store_engine(loc)
    try:
        with writer_engine(engine).begin() as conn:
            cfg = alembic_config()
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "0001")
    finally:
        engine.dispose()
    assert raw_sql("SELECT version_num FROM alembic_version") == [("0001",)]

    with open_store(store_url) as upgraded:
        assert upgraded.schema_revision == SCHEMA_HEAD  # 0002 and every later migration
        assert (upgraded.lineage, upgraded.snapshot(), upgraded.revisions()) == before
        assert upgraded.status_get(res("gmail").key) == {"health": "reachable"}
        assert upgraded.verify().ok
        r = upgraded.outbox.enqueue(note(1), namespace="default", idempotency_key="k")
        assert upgraded.outbox.get(r.id) is not None
