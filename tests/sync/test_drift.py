"""Continuous drift (SPEC X5 item 4): warn reports, heal writes git's version back as a
``heal`` revision naming what it reverted; status never counts."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli.helpers_history import GMAIL, HR, apply, live_set, run
from peers.postgres import RawSql
from plan.kit import copy_examples

from reconciler.state import RevisionKind, open_store
from reconciler.sync.drift import find_drift, heal


@pytest.fixture
def applied(tmp_path: Path, store_url: str) -> str:
    apply(copy_examples(tmp_path), store_url)
    return store_url


def test_warn_reports_and_heal_reverts_naming_the_revision(applied: str) -> None:
    live_set(applied, "OutgoingServer/acme/o365-hr", "enabled=false", reason="migration")
    live_set(applied, "OutgoingServer/acme/gmail-notifications", "spec.senderName=Night")
    with open_store(applied) as store:
        store.status_put(HR, {"health": "Unreachable", "sent": 3})  # never drift
        report = find_drift(store)  # what selfHeal: warn reports
        assert [i.change.key for i in report.items] == [GMAIL, HR]
        assert report.reverted == (2, 3) and report.baseline == 1
        assert "2 resource(s) changed outside git since revision 1" in report.summary()
        assert store.head() == 3  # reporting wrote nothing

        result = heal(store, "reconciler-sync", git_commit="c0ffee")
        rev = result.revision
        assert rev is not None and rev.number == 4 and rev.meta.kind is RevisionKind.HEAL
        assert rev.meta.message == ("self-heal: reverted out-of-band revisions 2, 3 to git's "
                                    "version (revision 1)")
        assert rev.meta.git_commit == "c0ffee"
        assert store.snapshot().resources[HR].spec["enabled"] is True
        assert store.snapshot().resources == store.snapshot(1).resources
        assert find_drift(store).items == ()
        assert heal(store, "reconciler-sync").revision is None  # nothing left
    shown = run("history", "show", "4", "--store", applied).stdout
    assert "revision 4  (heal)" in shown and "spec.enabled: false → true" in shown
    listed = run("history", "--kind", "heal", "--store", applied).stdout
    assert "heal" in listed and "reconciler-sync" in listed
    run("drift", ".", "--store", applied, code=0)


def test_heal_reverts_a_direct_database_edit(applied: str, raw_sql: RawSql) -> None:
    [(spec,)] = raw_sql("SELECT spec FROM resources WHERE name = :m", m=HR.name)
    raw_sql("UPDATE resources SET spec = :s WHERE name = :m",
            s=spec.replace('"enabled":true', '"enabled":false'), m=HR.name)
    with open_store(applied) as store:
        [item] = find_drift(store).items
        assert item.direct_edit and item.revisions == ()
        rev = heal(store, "reconciler-sync").revision
        assert rev is not None
        assert rev.meta.message == (f"self-heal: reverted direct database edits of {HR} to "
                                    "git's version (revision 1)")
        assert store.snapshot().resources[HR].spec["enabled"] is True
        assert store.verify().ok
