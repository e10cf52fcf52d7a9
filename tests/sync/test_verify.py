"""Verify and roll back (SPEC X5 item 5): a server that worked before an automatic apply
and is Unreachable after it is rolled back by itself, as a ``rollback`` revision naming
the failing probe step; real aiosmtpd peers, SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable

from health.kit import canonical, key_of
from peers.smtp import SmtpPeer, free_port, server_spec

from reconciler.config.models.outgoing_server import OutgoingServer
from reconciler.mail.probe_options import ProbeOptions
from reconciler.state import Action, Change, Revision, RevisionKind, RevisionMeta, SqlStore
from reconciler.sync.drift import find_drift
from reconciler.sync.verify import VerifySettings, reachable_before, verify_apply

PeerFactory = Callable[..., SmtpPeer]
OPTIONS = ProbeOptions(timeout=5.0, local_hostname="client.test")
QUICK = VerifySettings(window_seconds=30.0, interval_seconds=0.05, failures=2)


def apply(store: SqlStore, server: OutgoingServer, commit: str) -> Revision:
    live = store.snapshot()
    after = canonical(server)
    before = live.resources.get(after.key)
    change = Change(Action.CREATE if before is None else Action.UPDATE, after.key, before, after)
    return store.commit([change], RevisionMeta(actor="sync", git_commit=commit),
                        base_revision=live.revision)


async def test_a_host_moved_to_a_closed_port_is_rolled_back(
        store: SqlStore, peer_factory: PeerFactory) -> None:
    peer = peer_factory("plain")
    apply(store, server_spec(peer.port), "a1")
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
        "rollback of revision 2 (commit b2): OutgoingServer/default/peer unreachable after "
        "the apply: tcp: ")
    assert "refused" in rev.meta.message.lower()
    [live] = store.snapshot()
    assert live.spec["port"] == peer.port  # back where it worked
    assert find_drift(store).items == ()  # a rollback is git's word, not drift
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
