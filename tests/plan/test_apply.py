"""plan.apply against a real store (SQLite and PostgreSQL): lock, stale, lineage, threshold."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.config.desired import CanonicalResource
from reconciler.plan.apply import (
    ApplyRefused,
    LineageMismatch,
    ThresholdExceeded,
    apply_plan,
    resolve_actor,
)
from reconciler.plan.diff import diff
from reconciler.plan.model import GitInfo, Plan
from reconciler.state import (
    LockTimeout,
    RevisionMeta,
    SqlStore,
    StaleRevision,
    open_store,
)

from .kit import desired, res


def plan_for(store: SqlStore, *resources: CanonicalResource, prune: bool = False,
             git: GitInfo | None = None) -> Plan:
    d, lv = desired(*resources), store.snapshot()
    return Plan.build(diff(d, lv, prune=prune), d, lv, prune=prune, git=git)


def apply(store: SqlStore, plan: Plan, *, force: bool = False, actor: str = "alice") -> int:
    rev = apply_plan(store, plan, RevisionMeta(actor=actor), lock_timeout=0, force=force)
    return rev.number


def servers(n: int, port: int = 25) -> list[CanonicalResource]:
    return [res(f"s{i:02}", port=port) for i in range(n)]


def test_apply_writes_exactly_the_plan(store: SqlStore) -> None:
    want = [res("a", port=25), res("b", port=587, password={"secretRef": "env:B_PW"})]
    plan = plan_for(store, *want, git=GitInfo("c0ffee", "main", "5"))
    assert apply(store, plan) == 1
    assert dict(store.snapshot().resources) == {r.key: r for r in want}
    rev = store.revision(1)
    assert rev.meta.plan_digest == plan.digest
    assert rev.meta.desired_digest == plan.desired_digest
    assert (rev.meta.git_commit, rev.meta.git_branch, rev.meta.pull_request) == (
        "c0ffee", "main", "5")
    assert [c.fields for c in rev.changes] == [c.fields for c in plan.changes]
    assert store.current_lock() is None


def test_stale_plan_is_refused_and_nothing_is_written(store: SqlStore) -> None:
    apply(store, plan_for(store, res("a", port=25)))
    stale = plan_for(store, res("a", port=465))
    apply(store, plan_for(store, res("a", port=587)), actor="bob")
    before = store.snapshot()
    with pytest.raises(StaleRevision) as err:
        apply(store, stale)
    message = str(err.value)
    assert "changed since this plan was made" in message
    assert "based on revision 1" in message and "now at revision 2" in message
    assert "by bob" in message and "reconcile plan" in message
    assert store.head() == 2 and store.snapshot() == before


def test_plan_for_another_store_is_refused(store: SqlStore, tmp_path: Path) -> None:
    other = open_store(tmp_path / "other.db")
    try:
        plan = plan_for(other, res("a"))
    finally:
        other.close()
    with pytest.raises(LineageMismatch, match="another store"):
        apply(store, plan)
    assert store.head() == 0


def test_threshold_refuses_mass_changes_unless_forced(store: SqlStore) -> None:
    apply(store, plan_for(store, *servers(10)))
    # 4 of 10 (40 %) updated: above 30 %.
    wide = plan_for(store, *servers(4, port=587), *servers(10)[4:])
    with pytest.raises(ThresholdExceeded) as err:
        apply(store, wide)
    assert "change 4 of the 10 live resources" in str(err.value)
    assert "--force" in str(err.value)
    assert store.head() == 1
    assert apply(store, wide, force=True) == 2


def test_threshold_counts_deletes(store: SqlStore) -> None:
    apply(store, plan_for(store, *servers(10)))
    pruning = plan_for(store, *servers(10)[:6], prune=True)
    with pytest.raises(ThresholdExceeded, match="0 updates, 4 deletes"):
        apply(store, pruning)


def test_threshold_allows_changes_at_the_limit_and_creates(store: SqlStore) -> None:
    apply(store, plan_for(store, *servers(10)))
    plan = plan_for(store, *servers(3, port=587), *servers(10)[3:],
                    *[res(f"new{i}") for i in range(20)])
    assert apply(store, plan) == 2


def test_small_stores_are_not_guarded(store: SqlStore) -> None:
    apply(store, plan_for(store, *servers(9)))
    assert apply(store, plan_for(store, *servers(9, port=587))) == 2


def test_empty_plan_is_refused(store: SqlStore) -> None:
    with pytest.raises(ApplyRefused, match="nothing to apply"):
        apply(store, plan_for(store))


def test_lock_held_times_out_naming_the_holder(store: SqlStore) -> None:
    plan = plan_for(store, res("a"))
    with store.lock("carol@ci", "apply", timeout=0), pytest.raises(LockTimeout) as err:
        apply(store, plan)
    assert "carol@ci" in str(err.value)
    assert store.head() == 0


def test_apply_waits_for_the_lock(store_url: str) -> None:
    holder, applier = open_store(store_url), open_store(store_url)
    try:
        plan = plan_for(applier, res("a"))
        got_lock, release = threading.Event(), threading.Event()

        def hold() -> None:
            with holder.lock("carol", "apply", timeout=5):
                got_lock.set()
                release.wait(10)

        t = threading.Thread(target=hold)
        t.start()
        got_lock.wait(10)
        threading.Timer(0.2, release.set).start()
        rev = apply_plan(applier, plan, RevisionMeta(actor="alice"), lock_timeout=30,
                         force=False)
        t.join()
        assert rev.number == 1
    finally:
        holder.close()
        applier.close()


@pytest.fixture
def no_ci(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in ("GITHUB_ACTOR", "GITLAB_USER_LOGIN", "BUILD_REQUESTEDFOR",
                 "BUILDKITE_BUILD_CREATOR", "CIRCLE_USERNAME", "BITBUCKET_STEP_TRIGGERER_UUID"):
        monkeypatch.delenv(name, raising=False)
    yield


def test_actor_resolution_order(no_ci: None) -> None:
    env = {"GITHUB_ACTOR": "octocat", "GITLAB_USER_LOGIN": "tanuki"}
    assert resolve_actor("  dana ", env) == "dana"
    assert resolve_actor(None, env) == "octocat"
    assert resolve_actor(None, {"GITLAB_USER_LOGIN": "tanuki"}) == "tanuki"
    assert resolve_actor(None, {"BUILD_REQUESTEDFOR": "Ada Lovelace"}) == "Ada Lovelace"
    assert resolve_actor(None, {}) != ""
