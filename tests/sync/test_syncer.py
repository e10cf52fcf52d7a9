"""The sync loop with a real git repository, a real store and real SMTP peers (SPEC X5)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from health.kit import WebhookReceiver
from peers.git_repo import Repo
from peers.smtp import SmtpPeer, free_port

from reconciler.config.desired import ResourceKey
from reconciler.state import Action, Change, RevisionKind, RevisionMeta, Store, open_store
from reconciler.state.contract import SyncPhase

from .kit import APPLY, policy_yaml, server_yaml, syncer_for

KEY = ResourceKey("OutgoingServer", "acme", "desk")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with open_store(tmp_path / "state.db") as opened:
        yield opened


def live_port(store: Store) -> int:
    return int(store.snapshot().resources[KEY].spec["port"])


def live_set(store: Store, port: int) -> None:
    """What `reconcile live set` writes: an out-of-band revision."""
    live = store.snapshot()
    before = live.resources[KEY]
    after = before.build(KEY, before.api_version, {**before.spec, "port": port}, before.labels)
    store.commit([Change(Action.UPDATE, KEY, before, after)],
                 RevisionMeta(actor="ops", kind=RevisionKind.OUT_OF_BAND),
                 base_revision=live.revision)


async def test_commits_are_applied_and_invalid_ones_leave_live_alone(
        store: Store, repo: Repo, tmp_path: Path) -> None:
    first = repo.commit({"config/s.yaml": server_yaml(2525), "config/p.yaml": APPLY},
                        "add the desk server")
    syncer = syncer_for(store, repo, tmp_path)
    rec = await syncer.sync_once()
    assert (rec.phase, rec.last_applied, rec.last_fetched) == (SyncPhase.SYNCED, first, first)
    rev = store.revision(store.head())
    assert rev.meta.git_commit == first and rev.meta.git_branch == "main"
    assert "Ada Admin <ada@example.test>" in rev.meta.message
    assert "add the desk server" in rev.meta.message and live_port(store) == 2525

    bad = repo.commit({"config/s.yaml": server_yaml(2526, label=False)}, "oops")
    rec = await syncer.sync_once()
    assert rec.phase is SyncPhase.FAILED and rec.last_fetched == bad
    assert "config/s.yaml:12:13 spec.security: the connection to this server is not encrypted" \
        in rec.reason
    assert live_port(store) == 2525 and rec.last_applied == first

    fixed = repo.commit({"config/s.yaml": server_yaml(2527)}, "fix")
    rec = await syncer.sync_once()
    assert (rec.phase, rec.last_applied, live_port(store)) == (SyncPhase.SYNCED, fixed, 2527)


async def test_mode_plan_by_default_and_a_deny_window_hold(store: Store, repo: Repo,
                                                         tmp_path: Path) -> None:
    repo.commit({"config/s.yaml": server_yaml(2525)}, "no policy")
    syncer = syncer_for(store, repo, tmp_path)
    rec = await syncer.sync_once()
    assert rec.phase is SyncPhase.OUT_OF_SYNC and "mode plan" in rec.reason
    assert store.head() == 0

    window = '[{kind: deny, schedule: "0 0 1 1 *", duration: 1h}]'
    repo.commit({"config/p.yaml": policy_yaml(mode="apply", windows=window,
                                               verify="{enabled: false}")}, "policy")
    syncer.clock = lambda: datetime(2027, 1, 1, 0, 30, tzinfo=UTC)
    rec = await syncer.sync_once()
    assert rec.phase is SyncPhase.OUT_OF_SYNC and "sync window" in rec.reason
    assert rec.next_attempt_at == datetime(2027, 1, 1, 1, 0, tzinfo=UTC)
    assert store.head() == 0
    syncer.clock = lambda: datetime(2027, 1, 1, 1, 0, 1, tzinfo=UTC)
    rec = await syncer.sync_once()
    assert rec.phase is SyncPhase.SYNCED and live_port(store) == 2525


async def test_sync_now_overrides_a_window(store: Store, repo: Repo, tmp_path: Path) -> None:
    window = '[{kind: deny, schedule: "* * * * *", duration: 1h}]'
    repo.commit({"config/s.yaml": server_yaml(2525), "config/p.yaml": policy_yaml(
        mode="apply", windows=window, verify="{enabled: false}")}, "held")
    syncer = syncer_for(store, repo, tmp_path)
    assert (await syncer.sync_once()).phase is SyncPhase.OUT_OF_SYNC
    store.sync.update(requested_at=datetime.now(UTC), override_window=True)
    assert (await syncer.sync_once()).phase is SyncPhase.SYNCED


@pytest.mark.parametrize("how", ["heal", "warn"])
async def test_out_of_band_changes_are_healed_or_reported(
        store: Store, repo: Repo, tmp_path: Path, webhook: WebhookReceiver, how: str) -> None:
    repo.commit({"config/s.yaml": server_yaml(2525), "config/p.yaml": policy_yaml(
        mode="apply", selfHeal=how, verify="{enabled: false}")}, "first")
    syncer = syncer_for(store, repo, tmp_path, webhook=webhook)
    await syncer.sync_once()
    live_set(store, 2600)
    oob = store.head()
    await syncer.sync_once()
    head = store.revision(store.head())
    if how == "heal":
        assert head.meta.kind is RevisionKind.HEAL and live_port(store) == 2525
        assert f"out-of-band revision {oob}" in head.meta.message
    else:
        assert head.number == oob and live_port(store) == 2600
    drift = [r for r in webhook.received if r["event"] == "sync.drift"]
    assert len(drift) == 1 and drift[0]["resources"] == [str(KEY)]
    await syncer.sync_once()  # reported once, not every interval
    assert len([r for r in webhook.received if r["event"] == "sync.drift"]) == 1


async def test_a_credential_move_stops_the_sync(store: Store, repo: Repo,
                                                tmp_path: Path) -> None:
    auth = "{type: basic, username: desk, password: {secretRef: 'env:HEALTH_TEST_SMTP_PASSWORD'}}"
    repo.commit({"config/s.yaml": server_yaml(2525, auth=auth), "config/p.yaml": APPLY}, "a")
    syncer = syncer_for(store, repo, tmp_path)
    assert (await syncer.sync_once()).phase is SyncPhase.SYNCED  # the first apply binds
    moved = server_yaml(2525, auth=auth).replace("127.0.0.1", "127.0.0.2")
    repo.commit({"config/s.yaml": moved}, "move the host")
    rec = await syncer.sync_once()
    assert rec.phase is SyncPhase.FAILED and "credential" in rec.reason
    assert "--approve-credential-move" in rec.reason
    assert store.snapshot().resources[KEY].spec["host"] == "127.0.0.1"


async def test_a_broken_server_is_rolled_back_and_not_applied_again(
        store: Store, repo: Repo, tmp_path: Path, webhook: WebhookReceiver,
        peer_factory: Callable[..., SmtpPeer]) -> None:
    peer = peer_factory("plain")
    verify = "{windowSeconds: 20, intervalSeconds: 0.05, failures: 2}"
    repo.commit({"config/s.yaml": server_yaml(peer.port),
                 "config/p.yaml": policy_yaml(mode="apply", verify=verify)}, "works")
    syncer = syncer_for(store, repo, tmp_path, webhook=webhook)
    assert (await syncer.sync_once()).phase is SyncPhase.SYNCED
    bad = repo.commit({"config/s.yaml": server_yaml(free_port())}, "closed port")
    rec = await syncer.sync_once()
    assert (rec.phase, rec.degraded_commit) == (SyncPhase.DEGRADED, bad)
    assert "unreachable after the apply" in rec.reason
    head = store.revision(store.head())
    assert head.meta.kind is RevisionKind.ROLLBACK and live_port(store) == peer.port
    assert [r["event"] for r in webhook.received][-1] == "sync.rolled-back"
    await syncer.sync_once()
    assert store.head() == head.number  # the degraded commit is not applied again


async def test_a_suspended_sync_applies_nothing(store: Store, repo: Repo,
                                                tmp_path: Path) -> None:
    repo.commit({"config/s.yaml": server_yaml(2525), "config/p.yaml": APPLY}, "first")
    store.sync.update(phase=SyncPhase.SUSPENDED, suspended_by="ops")
    syncer = syncer_for(store, repo, tmp_path)
    assert (await syncer.sync_once()).phase is SyncPhase.SUSPENDED and store.head() == 0


async def test_outcomes_are_posted_as_commit_statuses_and_metrics(
        store: Store, repo: Repo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from peers.github import GitHubStatuses

    monkeypatch.setenv("SYNC_STATUS_TOKEN", "ghs-status-token")
    github = GitHubStatuses("ghs-status-token").start()
    try:
        good = repo.commit({"config/s.yaml": server_yaml(2525), "config/p.yaml": APPLY}, "a")
        syncer = syncer_for(store, repo, tmp_path, sync_status_repo="acme/mail-config",
                            sync_status_token_ref="env:SYNC_STATUS_TOKEN",
                            sync_status_api=github.api_url)
        await syncer.sync_once()
        bad = repo.commit({"config/s.yaml": server_yaml(2525, label=False)}, "b")
        await syncer.sync_once()
        failed = syncer.metrics.render().decode()
        # a commit that changes nothing live still ends its pending status
        same = repo.commit({"config/s.yaml": server_yaml(2525), "config/note.txt": "x"}, "c")
        await syncer.sync_once()
        again = repo.commit({"config/note.txt": "y"}, "d")
        await syncer.sync_once()
        await syncer.sync_once()  # nothing new fetched: nothing posted
    finally:
        github.stop()
    assert [(s["sha"], s["state"]) for s in github.statuses] == [
        (good, "pending"), (good, "success"), (bad, "pending"), (bad, "failure"),
        (same, "pending"), (same, "success"), (again, "pending"), (again, "success")]
    assert github.statuses[0]["description"] == f"syncing {good[:12]}"
    assert 'reconcile_sync_state{state="Failed"} 1.0' in failed
