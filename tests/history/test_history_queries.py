"""History read helpers: as-of documents, JSON export for auditors, unrecorded edits."""

from __future__ import annotations

import json

from peers.postgres import RawSql

from reconciler.config.desired import CanonicalResource, ResourceKey
from reconciler.history import queries
from reconciler.state import Action, Change, FieldChange, RevisionMeta, SqlStore

API = "reconciler.dev/v1"
KEY = ResourceKey("OutgoingServer", "acme", "gmail")
ENC = "enc:v1:gAAAAABmZXhhbXBsZS1jaXBoZXJ0ZXh0"


def _res(host: str) -> CanonicalResource:
    return CanonicalResource.build(
        KEY, API, {"host": host, "auth": {"password": {"secretRef": ENC}}}, {"env": "prod"})


def _two(store: SqlStore) -> tuple[CanonicalResource, CanonicalResource]:
    a, b = _res("smtp.one.example"), _res("smtp.two.example")
    store.commit([Change(Action.CREATE, KEY, None, a)],
                 RevisionMeta("alice", git_commit="c0ffee", pull_request="17"), base_revision=0)
    store.commit([Change(Action.UPDATE, KEY, a, b,
                         (FieldChange("spec.host", "smtp.one.example", "smtp.two.example"),))],
                 RevisionMeta("bob"), base_revision=1)
    return a, b


def test_as_of_documents_rebuild_old_config(store: SqlStore) -> None:
    a, b = _two(store)
    (doc,) = queries.as_of_documents(store, 1)
    assert doc == {"apiVersion": API, "kind": "OutgoingServer",
                   "metadata": {"name": "gmail", "namespace": "acme", "labels": {"env": "prod"}},
                   "spec": a.spec}
    assert queries.as_of_documents(store) == [b.to_document()]
    assert queries.as_of_documents(store, 0) == []


def test_export_is_json_redacted_and_oldest_first(store: SqlStore) -> None:
    _two(store)
    doc = queries.export(store, bodies=True)
    text = json.dumps(doc)  # must be JSON-able as is
    assert ENC not in text  # encrypted references are fingerprinted, never copied
    assert doc["lineage"] == store.lineage and doc["head"] == 2
    assert doc["verification"] == {"ok": True, "checked": 2, "firstBroken": None, "reason": ""}
    first, second = doc["revisions"]
    assert (first["revision"], first["actor"], first["gitCommit"], first["pullRequest"]) == (
        1, "alice", "c0ffee", "17")
    assert second["prevHash"] == first["hash"]
    (change,) = second["changes"]
    assert change["resource"] == "OutgoingServer/acme/gmail" and change["action"] == "update"
    assert change["fields"] == [{"path": "spec.host", "before": "smtp.one.example",
                                 "after": "smtp.two.example", "derived": False}]
    assert change["after"]["spec"]["auth"]["password"]["secretRef"].startswith("enc:v1:***")


def test_resource_history(store: SqlStore) -> None:
    _two(store)
    assert [r.number for r in queries.resource_history(store, KEY)] == [2, 1]
    assert [r.number for r in queries.resource_history(store, KEY, limit=1)] == [2]


def test_unrecorded_edits_are_found(store: SqlStore, raw_sql: RawSql) -> None:
    _two(store)
    assert queries.unrecorded_edits(store) == []
    raw_sql("UPDATE resources SET spec = :s", s=json.dumps({"host": "hand-edited.example"}))
    assert queries.unrecorded_edits(store) == [KEY]
    # A direct edit is drift, not tampering with the history.
    assert store.verify().ok
