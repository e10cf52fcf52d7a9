"""Verify and roll back (SPEC X5 item 5): a server that worked before an automatic apply
and is Unreachable after it is rolled back by itself, as a ``rollback`` revision naming
the failing probe step; real aiosmtpd peers, SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from health.kit import key_of
from mail.fetch_kit import PASSWORD_ENV, incoming_server
from peers.dovecot import DovecotInstance, MailUser
from peers.smtp import SmtpPeer, free_port, server_spec

from reconciler.config.desired import CanonicalResource, ResourceKey
from reconciler.config.models.incoming_server import IncomingServer
from reconciler.config.models.outgoing_server import OutgoingServer
from reconciler.mail.probe_options import ProbeOptions
from reconciler.state import Action, Change, Revision, RevisionKind, RevisionMeta, SqlStore
from reconciler.sync.drift import find_drift
from reconciler.sync.verify import VerifySettings, reachable_before, verify_apply

PeerFactory = Callable[..., SmtpPeer]
OPTIONS = ProbeOptions(timeout=5.0, local_hostname="client.test")
QUICK = VerifySettings(window_seconds=30.0, interval_seconds=0.05, failures=2)


def canonical(server: OutgoingServer | IncomingServer) -> CanonicalResource:
    spec = server.spec.model_dump(mode="json", by_alias=True, exclude_none=True)
    key = ResourceKey(server.kind, server.metadata.namespace, server.metadata.name)
    return CanonicalResource.build(key, server.api_version, spec, server.metadata.labels)


def apply(store: SqlStore, server: OutgoingServer | IncomingServer, commit: str | None,
          kind: RevisionKind = RevisionKind.APPLY) -> Revision:
    live = store.snapshot()
    after = canonical(server)
    before = live.resources.get(after.key)
    change = Change(Action.CREATE if before is None else Action.UPDATE, after.key, before, after)
    return store.commit([change], RevisionMeta(actor="sync", git_commit=commit, kind=kind),
                        base_revision=live.revision)


async def test_a_host_moved_to_a_closed_port_is_rolled_back(
        store: SqlStore, peer_factory: PeerFactory) -> None:
    peer = peer_factory("plain")
    apply(store, server_spec(peer.port), "a1")
    apply(store, server_spec(peer.port, senderName="Emergency"), None, RevisionKind.OUT_OF_BAND)
    bad = apply(store, server_spec(free_port()), "b2")  # nothing listens there
    before = await reachable_before(bad.changes, OPTIONS)
    assert before == {key_of(server_spec(peer.port))}

    result = await verify_apply(store, bad, before, QUICK, actor="reconciler-sync",
                                options=OPTIONS)
    assert result.degraded and [b.step for b in result.broken] == ["tcp"]
    rev = result.rollback
    assert rev is not None and rev.meta.kind is RevisionKind.ROLLBACK
    assert rev.meta.git_commit == "b2" and rev.meta.actor == "reconciler-sync"
    assert rev.meta.message.startswith(
        "rollback of revision 3 (commit b2): OutgoingServer/default/peer unreachable after "
        "the apply: tcp: ")
    assert "refused" in rev.meta.message.lower()
    [live] = store.snapshot()
    assert live == canonical(server_spec(peer.port))  # back to what git wrote and bound
    drift = find_drift(store)  # a rollback is git's word, not drift
    assert drift.items == () and drift.baseline_kind is RevisionKind.ROLLBACK
    assert store.revision(store.head()).meta.kind is RevisionKind.ROLLBACK


async def test_a_working_change_and_a_server_that_never_worked_stay(
        store: SqlStore, peer_factory: PeerFactory) -> None:
    peer = peer_factory("plain")
    apply(store, server_spec(peer.port), "a1")
    good = apply(store, server_spec(peer.port, senderName="Night Desk"), "b2")
    before = await reachable_before(good.changes, OPTIONS)
    result = await verify_apply(store, good, before,
                                VerifySettings(window_seconds=0.2, interval_seconds=0.05),
                                actor="reconciler-sync", options=OPTIONS)
    assert not result.degraded and result.rollback is None and result.checked == (
        key_of(server_spec(peer.port)),)

    apply(store, server_spec(free_port(), "plain", "dead"), "c3")
    worse = apply(store, server_spec(free_port(), "plain", "dead", senderName="X"), "d4")
    assert await reachable_before(worse.changes, OPTIONS) == frozenset()
    result = await verify_apply(store, worse, frozenset(), QUICK, actor="reconciler-sync",
                                options=OPTIONS)
    assert result.checked == () and not result.degraded and store.head() == worse.number


async def test_an_incoming_server_that_cannot_log_in_any_more_is_rolled_back(
        store: SqlStore, dovecot: DovecotInstance, mailbox: MailUser,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PASSWORD_ENV, mailbox.password)
    monkeypatch.setenv("SYNC_TEST_OTHER_PASSWORD", "not-the-password")
    good = incoming_server(dovecot, mailbox, "imap")
    doc = good.model_dump(mode="json", by_alias=True, exclude_none=True)
    doc["spec"]["auth"]["password"] = {"secretRef": "env:SYNC_TEST_OTHER_PASSWORD"}
    apply(store, good, "a1")
    bad = apply(store, IncomingServer.model_validate(doc), "b2")
    before = await reachable_before(bad.changes, OPTIONS)
    result = await verify_apply(store, bad, before, QUICK, actor="reconciler-sync",
                                options=OPTIONS)
    assert [(str(b.key), b.step) for b in result.broken] == [
        ("IncomingServer/default/desk", "auth")]
    assert result.rollback is not None and "auth: " in result.rollback.meta.message
    [live] = store.snapshot()
    assert live.spec["auth"]["password"] == {"secretRef": f"env:{PASSWORD_ENV}"}
    assert "not-the-password" not in result.rollback.meta.message
