"""The hash chain: verify passes on an honest store and names the first tampered revision."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from peers.postgres import RawSql

from reconciler.config.desired import CanonicalResource, ResourceKey, canonical_json
from reconciler.state import (
    Action,
    Change,
    FieldChange,
    RevisionKind,
    RevisionMeta,
    SqlStore,
    chain,
)

KEY = ResourceKey("OutgoingServer", "default", "gmail")


def _res(port: int) -> CanonicalResource:
    return CanonicalResource.build(KEY, "reconciler.dev/v1", {"host": "smtp.gmail.com",
                                                              "port": port})


@pytest.fixture
def three(store: SqlStore) -> SqlStore:
    """A store with three revisions: create, update, out-of-band update."""
    a, b, c = _res(25), _res(587), _res(465)
    store.commit([Change(Action.CREATE, KEY, None, a)], RevisionMeta("alice", git_commit="c1"),
                 base_revision=0)
    store.commit([Change(Action.UPDATE, KEY, a, b, (FieldChange("spec.port", 25, 587),))],
                 RevisionMeta("bob", message="use STARTTLS"), base_revision=1)
    store.commit([Change(Action.UPDATE, KEY, b, c, (FieldChange("spec.port", 587, 465),))],
                 RevisionMeta("admin-api", kind=RevisionKind.OUT_OF_BAND), base_revision=2)
    return store


def test_honest_chain_verifies(three: SqlStore) -> None:
    check = three.verify()
    assert check.ok and check.checked == 3 and check.first_broken is None
    revs = sorted(three.revisions(), key=lambda r: r.number)
    assert revs[0].prev_hash == chain.genesis_hash(three.lineage)
    assert [r.prev_hash for r in revs[1:]] == [r.hash for r in revs[:-1]]


def test_edited_revision_is_named(three: SqlStore, raw_sql: RawSql) -> None:
    raw_sql("UPDATE revisions SET actor = 'mallory' WHERE number = 2")
    check = three.verify()
    assert (check.ok, check.first_broken, check.checked) == (False, 2, 1)
    assert "revision 2 was changed after it was written" in check.reason


def test_edited_field_diff_is_named(three: SqlStore, raw_sql: RawSql) -> None:
    stored = raw_sql("SELECT changes FROM revisions WHERE number = 1")[0][0]
    records = json.loads(stored)
    records[0]["fields"] = [{"path": "spec.port", "before": None, "after": 2525,
                             "derived": False}]
    raw_sql("UPDATE revisions SET changes = :c WHERE number = 1", c=canonical_json(records))
    check = three.verify()
    assert (check.ok, check.first_broken) == (False, 1)


def test_edited_resource_body_is_named(three: SqlStore, raw_sql: RawSql) -> None:
    body = json.loads(raw_sql("SELECT body FROM resource_versions WHERE revision = 2")[0][0])
    body["spec"]["host"] = "evil.example.com"
    raw_sql("UPDATE resource_versions SET body = :b WHERE revision = 2", b=canonical_json(body))
    check = three.verify()
    assert (check.ok, check.first_broken) == (False, 2)
    assert "OutgoingServer/default/gmail" in check.reason and "edited" in check.reason


def test_rewritten_revision_with_recomputed_hash_is_named(
    three: SqlStore, raw_sql: RawSql
) -> None:
    """A careful tamperer recomputes the row's own hash; the next link still breaks."""
    row = raw_sql("SELECT number, created_at, prev_hash, changes FROM revisions "
                  "WHERE number = 2")[0]
    created = row[1] if isinstance(row[1], datetime) else datetime.fromisoformat(row[1])
    created = created.replace(tzinfo=UTC) if created.tzinfo is None else created.astimezone(UTC)
    forged = RevisionMeta("bob", message="nothing to see here")
    content = chain.revision_content(2, created, forged, json.loads(row[3]))
    raw_sql("UPDATE revisions SET message = :m, hash = :h WHERE number = 2",
            m=forged.message, h=chain.revision_hash(row[2], content))
    check = three.verify()
    assert (check.ok, check.first_broken) == (False, 2)
    assert "revision 2 was rewritten" in check.reason


def test_rewritten_head_is_named(three: SqlStore, raw_sql: RawSql) -> None:
    raw_sql("UPDATE revisions SET hash = :h WHERE number = 3", h="0" * 64)
    assert three.verify().first_broken == 3


def test_removed_revisions_are_named(three: SqlStore, raw_sql: RawSql) -> None:
    raw_sql("DELETE FROM resource_versions WHERE revision = 3")
    raw_sql("DELETE FROM revisions WHERE number = 3")
    check = three.verify()
    assert (check.ok, check.first_broken) == (False, 3)
    assert "removed" in check.reason


def test_gap_in_the_middle_is_named(three: SqlStore, raw_sql: RawSql) -> None:
    raw_sql("DELETE FROM resource_versions WHERE revision = 2")
    raw_sql("DELETE FROM revisions WHERE number = 2")
    check = three.verify()
    assert (check.ok, check.first_broken) == (False, 2)
    assert "revision 2 is missing" in check.reason


def test_chain_is_bound_to_the_store_lineage() -> None:
    assert chain.genesis_hash("a") != chain.genesis_hash("b")
    meta = RevisionMeta("alice")
    when = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
    content = chain.revision_content(1, when, meta, [])
    assert chain.revision_hash("x", content) != chain.revision_hash("y", content)
    assert content["createdAt"] == "2024-06-01T12:00:00+00:00"


def test_verify_is_pure_over_rows() -> None:
    when = datetime(2024, 6, 1, tzinfo=UTC)
    meta = RevisionMeta("alice")
    prev = chain.genesis_hash("L")
    row = chain.StoredRevision(1, when, meta, "[]", prev,
                               chain.revision_hash(prev, chain.revision_content(1, when, meta,
                                                                                [])))
    assert chain.verify("L", [row], 1, row.hash).ok
    assert chain.verify("other", [row], 1, row.hash).first_broken == 1
    assert chain.verify("L", [], 0, None).ok
