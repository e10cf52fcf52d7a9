"""`reconcile drift` (SPEC P5, P7): out-of-band and direct edits since the last apply."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from peers.postgres import RawSql
from plan.kit import copy_examples

from reconciler.state import open_store

from .helpers_history import GMAIL, HR, apply, assert_user_error, live_set, run, run_installed


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return copy_examples(tmp_path)


@pytest.fixture
def applied(config: Path, store_url: str) -> str:
    apply(config, store_url)
    return store_url


def test_no_drift_right_after_apply(config: Path, applied: str) -> None:
    out = run("drift", config, "--store", applied).stdout
    assert out.strip() == "no drift: the live store matches revision 1, the last apply (head 1)"
    data = json.loads(run("drift", config, "--format", "json", "--store", applied).stdout)
    assert data["drift"] is False and data["resources"] == [] and data["lastApply"] == 1


def test_live_set_is_drift_until_the_next_apply(config: Path, applied: str) -> None:
    live_set(applied, "OutgoingServer/acme/o365-hr", "enabled=false", "attachmentLimitMB=5",
             actor="alice", reason="HR mailbox migration")
    out = run("drift", config, "--store", applied, code=2).stdout
    assert "drift: 1 resource changed outside git since revision 1, the last apply" in out
    assert f"~ {HR}\n" in out
    assert "by revision 2 (out-of-band), alice at " in out and '"HR mailbox migration"' in out
    assert "    spec.enabled: true → false" in out
    assert "    spec.attachmentLimitMB: 10.0 → 5.0" in out
    assert f"`reconcile plan {config}` shows what applying git would revert" in out
    data = json.loads(run("drift", config, "--format", "json", "--store", applied,
                          code=2).stdout)
    assert data["drift"] is True and data["head"] == 2
    [item] = data["resources"]
    assert item["resource"] == str(HR) and item["action"] == "update"
    assert item["revisions"][0]["actor"] == "alice" and item["directEdit"] is False
    assert {f["path"]: (f["before"], f["after"]) for f in item["fields"]} == {
        "spec.enabled": (True, False), "spec.attachmentLimitMB": (10.0, 5.0)}
    apply(config, applied)  # git wins again
    run("drift", config, "--store", applied, code=0)


def test_plan_shows_the_revert_of_a_live_edit(config: Path, applied: str) -> None:
    live_set(applied, "OutgoingServer/acme/gmail-notifications", "spec.senderName=Night Desk")
    out = run("plan", config, "--store", applied, code=2).stdout
    assert "~ update OutgoingServer acme/gmail-notifications" in out
    assert '    spec.senderName: "Night Desk" → "Acme IT Help Desk"' in out
    assert "Plan: 0 to create, 1 to update, 0 to delete" in out


def test_status_is_never_drift(config: Path, applied: str) -> None:
    with open_store(applied) as store:
        for key in (GMAIL, HR):
            store.status_put(key, {"health": "Unreachable", "lastError": "timeout",
                                   "activeHost": "smtp-relay.gmail.com", "sent": 41})
        assert store.status_get(GMAIL)["health"] == "Unreachable"
    run("drift", config, "--store", applied, code=0)
    run("plan", config, "--store", applied, code=0)


def test_a_direct_database_edit_is_drift(config: Path, applied: str, raw_sql: RawSql) -> None:
    [(spec,)] = raw_sql("SELECT spec FROM resources WHERE kind = :k AND namespace = :n "
                        "AND name = :m", k=HR.kind, n=HR.namespace, m=HR.name)
    raw_sql("UPDATE resources SET spec = :s WHERE name = :m",
            s=spec.replace('"enabled":true', '"enabled":false'), m=HR.name)
    out = run("drift", config, "--store", applied, code=2).stdout
    assert f"~ {HR}" in out and "edited directly in the database" in out
    assert "    spec.enabled: true → false" in out
    data = json.loads(run("drift", config, "--format", "json", "--store", applied,
                          code=2).stdout)
    assert data["resources"][0]["directEdit"] is True
    assert data["resources"][0]["revisions"] == []


def test_created_and_deleted_out_of_band(config: Path, applied: str) -> None:
    from reconciler.state import Action, Change, RevisionKind, RevisionMeta

    with open_store(applied) as store:
        live = store.snapshot()
        hr = live.resources[HR]
        store.commit([Change(Action.DELETE, HR, hr, None)],
                     RevisionMeta(actor="admin-api", message="removed in the console",
                                  kind=RevisionKind.OUT_OF_BAND),
                     base_revision=live.revision)
    out = run("drift", config, "--store", applied, code=2).stdout
    assert f"- {HR}" in out and "admin-api" in out


def test_exit_codes_through_the_installed_command(config: Path, applied: str) -> None:
    assert run_installed("drift", config, "--store", applied).returncode == 0
    live_set(applied, "OutgoingServer/acme/o365-hr", "enabled=false")
    proc = run_installed("drift", config, "--store", applied)
    assert proc.returncode == 2, proc.stderr
    # A usage error must not look like drift to a CI job that branches on exit 2.
    proc = run_installed("drift", config, "--store", applied, "--format", "yaml")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr


def test_errors_exit_1(tmp_path: Path, config: Path) -> None:
    assert_user_error(run("drift", config, "--store", tmp_path / "nope.db", code=None),
                      "no state store")
    result = run("drift", tmp_path / "no-such-dir", code=None)
    assert result.exit_code == 1 and "Traceback" not in result.output
