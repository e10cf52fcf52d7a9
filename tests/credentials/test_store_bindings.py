"""The credential_bindings table (SPEC S2): written by apply revisions only, in their
transaction; migration 0005 binds what an upgraded store already runs with."""

from __future__ import annotations

from typing import Any

from alembic import command
from peers.postgres import RawSql

from reconciler.config.desired import CanonicalResource, ResourceKey
from reconciler.state import Action, Change, RevisionKind, RevisionMeta, SqlStore, open_store
from reconciler.state.location import create_store_engine, parse_location, writer_engine
from reconciler.state.migrate import SCHEMA_HEAD, alembic_config

REF = {"secretRef": "env:S2_PASSWORD"}


def server(name: str, host: str, port: int = 587, **auth: Any) -> CanonicalResource:
    spec = {"email": f"{name}@desk.example", "protocol": "smtp", "host": host, "port": port,
            "security": "starttls", "auth": {"type": "basic", "password": REF, **auth}}
    return CanonicalResource.build(ResourceKey("OutgoingServer", "default", name),
                                   "reconciler.dev/v1", spec, None)


def test_apply_binds_out_of_band_does_not_and_delete_unbinds(store: SqlStore) -> None:
    a = server("desk", "smtp.a.example")
    store.commit([Change(Action.CREATE, a.key, None, a)], RevisionMeta(actor="dana"),
                 base_revision=0)
    assert store.credential_bindings() == {("secret:env:S2_PASSWORD", "smtp.a.example:587")}
    b = server("desk", "smtp.b.example")
    store.commit([Change(Action.UPDATE, a.key, a, b)],
                 RevisionMeta(actor="mallory", kind=RevisionKind.OUT_OF_BAND), base_revision=1)
    assert store.credential_bindings() == {("secret:env:S2_PASSWORD", "smtp.a.example:587")}
    store.commit([Change(Action.DELETE, a.key, b, None)], RevisionMeta(actor="dana"),
                 base_revision=2)
    assert store.credential_bindings() == frozenset()


def test_migration_0005_binds_the_live_resources_of_an_older_store(
        store: SqlStore, store_url: str, raw_sql: RawSql) -> None:
    a = server("desk", "smtp.a.example", port=2525)
    store.commit([Change(Action.CREATE, a.key, None, a)], RevisionMeta(actor="dana"),
                 base_revision=0)
    before = store.revisions()
    store.close()
    engine = create_store_engine(parse_location(store_url))
    try:
        with writer_engine(engine).begin() as conn:
            cfg = alembic_config()
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "0004")
    finally:
        engine.dispose()
    assert raw_sql("SELECT version_num FROM alembic_version") == [("0004",)]

    with open_store(store_url) as upgraded:
        assert upgraded.schema_revision == SCHEMA_HEAD
        assert upgraded.credential_bindings() == {
            ("secret:env:S2_PASSWORD", "smtp.a.example:2525")}
        assert upgraded.revisions() == before
        assert upgraded.verify().ok
