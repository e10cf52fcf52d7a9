"""A head snapshot compares by digest without parsing rows: a row stored in another
serialisation is still equal by value, a hand-edited one still differs (SPEC P7's drift)."""

from __future__ import annotations

import json

from peers.postgres import RawSql

from reconciler.config.desired import DesiredState, digest_at, has_digest
from reconciler.plan.diff import diff
from reconciler.state import SqlStore

from .kit import create, meta, res


def test_rows_written_otherwise_compare_by_value(store: SqlStore, raw_sql: RawSql) -> None:
    a = res("a", labels={"env": "prod"}, host="smtp.a.example", port=587)
    b = res("b", host="smtp.b.example", port=25)
    c = res("c", host="smtp.c.example")
    store.commit([create(a), create(b), create(c)], meta(), base_revision=0)
    # b: the same value in another serialiser's bytes; c: a new value, by hand
    raw_sql("UPDATE resources SET spec = :s WHERE name = 'b'",
            s='{ "port" : 25, "host" : "smtp.b.example" }')
    raw_sql("UPDATE resources SET spec = :s WHERE name = 'c'",
            s=json.dumps({"host": "hand.example"}))
    edited = res("c", host="hand.example")
    live = store.snapshot()
    assert [has_digest(live.resources, r.key, r.digest) for r in (a, b, c, edited)] == [
        True, True, False, True]
    assert [digest_at(live.resources, r.key) for r in (a, b, edited)] == [
        a.digest, b.digest, edited.digest]
    assert [ch.key for ch in diff(DesiredState.of([a, b, c]), live).changes] == [c.key]
    assert live.resources == {a.key: a, b.key: b, c.key: edited}
    assert list(live.resources) == sorted([a.key, b.key, c.key])
