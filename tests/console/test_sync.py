"""Sync & drift screen (SPEC X6, X5, P5): state, last commits, drifted resources, and
"Sync now" for operators."""

from __future__ import annotations

from state.kit import res

from console.conftest import Console
from console.console_kit import csrf_for
from console.test_history import apply
from reconciler.runtime.access import Principal
from reconciler.state import RevisionKind, SqlStore
from reconciler.state.contract import SyncPhase

VIEWER = Principal.of("viewer", ["viewer"])
OPERATOR = Principal.of("ops", ["operator"])
ACME_ONLY = Principal.of("acme-ops", ["operator"], ["acme"])


def drifted(store: SqlStore) -> None:
    acme, beta = res("smtp", ns="acme", host="a.example"), res("smtp", ns="beta", host="b")
    apply(store, acme, beta, git_commit="aaaa1111")
    apply(store, res("smtp", ns="acme", host="hand-edited.example"),
          res("smtp", ns="beta", host="b-edited"), kind=RevisionKind.OUT_OF_BAND,
          actor="carol", message="quick fix")
    store.sync.update(phase=SyncPhase.OUT_OF_SYNC, reason="waiting for the window",
                      last_fetched="bbbb2222", last_applied="aaaa1111",
                      source="https://git.example/it/cfg.git")


def test_shows_state_commits_and_drift(console_store: SqlStore, console_as: Console) -> None:
    drifted(console_store)
    page = console_as(VIEWER, sync_repo="https://git.example/it/cfg.git").get("/console/sync")
    assert page.status_code == 200
    assert "OutOfSync" in page.text and "waiting for the window" in page.text
    assert 'href="https://git.example/it/cfg/commit/bbbb2222"' in page.text
    assert "OutgoingServer acme/smtp" in page.text and "OutgoingServer beta/smtp" in page.text
    assert 'href="/console/history/2"' in page.text and "carol" in page.text
    assert "Sync now" not in page.text  # a viewer only reads


def test_a_scoped_principal_sees_only_its_drift_and_cannot_sync_all(
        console_store: SqlStore, console_as: Console) -> None:
    drifted(console_store)
    client = console_as(ACME_ONLY)
    page = client.get("/console/sync")
    assert "acme/smtp" in page.text and "beta/smtp" not in page.text
    assert "Sync now" not in page.text
    refused = client.post("/console/sync/now", data={"csrf_token": csrf_for(client)})
    assert refused.status_code == 403
    assert console_store.sync.get().requested_at is None


def test_sync_now_records_the_request_and_wakes_the_syncer(
        console_store: SqlStore, console_as: Console) -> None:
    woken: list[bool] = []
    client = console_as(OPERATOR, app_state={"sync_wake": lambda: woken.append(True)})
    assert "Sync now" in client.get("/console/sync").text
    done = client.post("/console/sync/now", data={"csrf_token": csrf_for(client)},
                       follow_redirects=False)
    assert done.status_code == 303 and done.headers["location"] == "/console/sync?requested=1"
    assert console_store.sync.get().requested_at is not None and woken == [True]
    assert "Sync requested" in client.get(done.headers["location"]).text
    viewer = console_as(VIEWER)
    assert viewer.post("/console/sync/now",
                       data={"csrf_token": csrf_for(viewer)}).status_code == 403
