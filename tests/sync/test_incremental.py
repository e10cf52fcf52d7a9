"""The syncer's incremental path (kept validation cache, kept live state) against a cold
validation and a cold snapshot, commit after commit: same diagnostics, desired state,
SyncPolicies, plan and live state (SPEC X5)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from peers.git_repo import Repo

from reconciler.config.models.sync_policy import SyncPolicy
from reconciler.plan.apply import apply_plan
from reconciler.plan.folder import plan_against
from reconciler.plan.model import Plan
from reconciler.policy.validate import validate_path
from reconciler.state import Action, Change, RevisionKind, RevisionMeta, Store, open_store
from reconciler.state.revisions import Revision
from reconciler.sync.commit_check import CommitChecker, sync_policies
from reconciler.sync.live import LiveCache
from reconciler.sync.source import GitSource

from .kit import policy_yaml, server_yaml


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with open_store(tmp_path / "state.db") as opened:
        yield opened


def in_ns(namespace: str, text: str) -> str:
    return text.replace("namespace: acme", f"namespace: {namespace}")


def out_of_band(store: Store, namespace: str, port: int = 2999) -> None:
    """What `reconcile live set` writes: the port of one live server changed."""
    live = store.snapshot()
    key = next(k for k in live.resources if k.namespace == namespace and k.name == "desk")
    before = live.resources[key]
    after = before.build(key, before.api_version, {**before.spec, "port": port}, before.labels)
    store.commit([Change(Action.UPDATE, key, before, after)],
                 RevisionMeta(actor="ops", kind=RevisionKind.OUT_OF_BAND),
                 base_revision=live.revision)


COMMITS: list[dict[str, str | None]] = [
    {f"config/{ns}.yaml": in_ns(ns, server_yaml(2525 + i)) for i, ns in
     enumerate(("acme", "globex", "initech"))} | {"config/policy.yaml": policy_yaml(
         mode="apply", verify="{enabled: false}")},
    {"config/globex.yaml": in_ns("globex", server_yaml(2600))},
    {"config/umbrella.yaml": in_ns("umbrella", server_yaml(2700)
                                   + "---\n" + server_yaml(2701, name="relay", primary="false")
                                   .replace("namespace: acme", "namespace: umbrella"))},
    {"config/initech.yaml": None},  # a deletion: planned with prune
    {"config/globex.yaml": in_ns("globex", server_yaml(2601, label=False))},  # invalid
    {"config/globex.yaml": in_ns("globex", server_yaml(2602))},
    {"config/policy.yaml": policy_yaml(mode="apply", selfHeal="heal",
                                       verify="{enabled: false}")},
    {"config/notes.txt": "not config"},  # nothing to plan
]


async def test_incremental_sync_matches_a_cold_one_commit_after_commit(
        store: Store, repo: Repo, tmp_path: Path) -> None:
    source = GitSource(f"file://{repo.bare}", tmp_path / "cache", path="config")
    checker, live = CommitChecker(tmp_path / "cache" / "validation"), LiveCache()
    warm_runs = 0
    for step, files in enumerate(COMMITS):
        repo.commit(files, f"step {step}")
        if step == 5:  # the store moved outside git: the kept state must see it
            out_of_band(store, "acme")
        tree = source.checkout(source.fetch()).tree
        cold, warm = validate_path(tree), checker.validate(tree)
        warm_runs += not isinstance(warm, type(cold))
        assert warm.diagnostics.items == cold.diagnostics.items, step
        if not cold.ok:
            assert not warm.ok
            continue
        assert warm.desired == cold.desired and warm.derivations() == dict(cold.derivations())
        assert _policies(sync_policies(warm, tree)) == _policies(sync_policies(cold, tree))
        planned = plan_against(tree, warm, store, prune=True, live=live.snapshot)
        assert _digest(planned) == _digest(plan_against(tree, cold, store, prune=True)), step
        assert live.snapshot(store) == store.snapshot()
        if planned.has_changes:
            rev = apply_plan(store, planned, RevisionMeta(actor="t"), lock_timeout=5,
                             force=True)
            live.applied(rev)
            assert live.snapshot(store) == store.snapshot(), step
    assert warm_runs >= 5  # the cached path was taken, not only the cold fallback
    assert {k.namespace for k in store.snapshot().resources} == {"acme", "globex", "umbrella"}


def _digest(plan: Plan) -> str:
    """The plan's digest but for the second it was made in."""
    return replace(plan, created_at=datetime(2027, 1, 1, tzinfo=UTC)).sealed().digest


def _policies(found: list[SyncPolicy]) -> list[dict[str, object]]:
    return [p.model_dump() for p in found]


def test_the_kept_live_state_reads_the_store_again_when_it_cannot_catch_up(
        store: Store, repo: Repo, tmp_path: Path) -> None:
    repo.commit({"config/acme.yaml": server_yaml(2525)}, "one")
    source = GitSource(f"file://{repo.bare}", tmp_path / "cache", path="config")
    tree = source.checkout(source.fetch()).tree
    live = LiveCache()
    rev: Revision = apply_plan(store, plan_against(tree, validate_path(tree), store,
                                                   prune=False, live=live.snapshot),
                               RevisionMeta(actor="t"), lock_timeout=5, force=True)
    live.applied(rev)
    for n in range(60):  # more revisions than it catches up on: one full read instead
        out_of_band(store, "acme", 3000 + n)
    assert live.snapshot(store) == store.snapshot()
