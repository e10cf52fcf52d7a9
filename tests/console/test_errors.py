"""The console's error pages (403 naming the role, 404, 500 without a traceback) and
its assets (cached, under 200 KB per page)."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.runtime.access import Principal
from reconciler.state import SqlStore

from .console_kit import (
    TokenTable,
    applied_store,
    client,
    console_app,
    csrf_for,
    csrf_of,
    daemon_app,
    sign_in,
    signed_in,
)

ASSET_BUDGET = 200 * 1024


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqlStore]:
    # SQLite only: a test breaks the file on purpose
    yield from applied_store(tmp_path / "console.db")


def test_a_missing_role_gets_a_403_page_naming_it(store: SqlStore) -> None:
    tokens = TokenTable()
    browser = client(console_app(store, tokens))
    sign_in(browser, tokens.add(Principal.of("notifier", ["sender"])))
    reply = browser.get("/console/servers")
    assert reply.status_code == 403
    assert "text/html" in reply.headers["content-type"]
    assert "This needs the viewer role" in reply.text and "notifier" in reply.text


def test_a_viewer_acting_on_the_outbox_is_told_it_needs_operator(store: SqlStore) -> None:
    tokens = TokenTable()
    browser = client(console_app(store, tokens))
    sign_in(browser, tokens.add(Principal.of("watcher", ["viewer"])))
    token = csrf_of(browser.get("/console/").text)
    reply = browser.post("/console/outbox/1/retry", data={"csrf_token": token})
    assert reply.status_code == 403 and "This needs the operator role" in reply.text


@pytest.mark.parametrize("path", ["/console/outbox/987654", "/console/outbox/not-a-number",
                                  "/console/no-such-page", "/console/outbox/1/explode"])
def test_unknown_things_get_the_404_page(store: SqlStore, path: str) -> None:
    tokens = TokenTable()
    browser = client(console_app(store, tokens))
    sign_in(browser, tokens.add(Principal.of("admin", ["admin"])))
    token = csrf_of(browser.get("/console/").text)
    reply = (browser.post(path, data={"csrf_token": token}) if path.endswith("explode")
             else browser.get(path))
    assert reply.status_code == 404
    assert "text/html" in reply.headers["content-type"] and "Not found" in reply.text


def test_a_failure_shows_a_reference_never_a_traceback(
        store: SqlStore, caplog: pytest.LogCaptureFixture) -> None:
    # The daemon's worker hook fails after a retry went through: an unexpected error.
    def broken_wake() -> None:
        raise RuntimeError("worker pool is gone")

    queued = store.outbox.enqueue({"module": "requests", "to": ["someone@example.com"],
                                   "subject": "hi", "textBody": "x"}, namespace="default",
                                  idempotency_key=None)
    browser = signed_in(store, Principal.of("admin", ["admin"]),
                        app_state={"wake_worker": broken_wake})
    reply = browser.post(f"/console/outbox/{queued.id}/retry",
                         data={"csrf_token": csrf_for(browser)})
    assert reply.status_code == 500
    assert "Traceback" not in reply.text and 'File "' not in reply.text
    assert "RuntimeError" not in reply.text and "worker pool" not in reply.text
    reference = re.search(r"reference ([0-9a-f]{8})", reply.text)
    assert reference is not None
    assert any(reference.group(1) in r.getMessage() and r.exc_info for r in caplog.records)


def test_the_api_keeps_its_json_answers(store: SqlStore) -> None:
    browser = client(console_app(store, TokenTable()))
    assert browser.get("/v1/nothing-here").headers["content-type"] == "application/json"


def test_every_page_loads_under_200_kb_of_cached_assets(store: SqlStore) -> None:
    tokens = TokenTable()
    browser = client(console_app(store, tokens))
    sign_in(browser, tokens.add(Principal.of("admin", ["admin"])))
    for path in ("/console/", "/console/servers", "/console/outbox", "/console/signin"):
        html = browser.get(path).text
        assets = re.findall(r'(?:src|href)="(/console/static/[^"]+)"', html)
        assert assets, path
        total = 0
        for asset in assets:
            reply = browser.get(asset)
            assert reply.status_code == 200
            assert "max-age" in reply.headers["cache-control"]
            total += len(reply.content)
        assert len(html.encode()) + total <= ASSET_BUDGET, path


def test_a_store_failure_is_a_page_on_the_console_and_json_on_the_api(
        store: SqlStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    app, token = daemon_app(store, monkeypatch)
    browser = client(app)
    sign_in(browser, token)
    with sqlite3.connect(tmp_path / "console.db") as broken:  # the store loses its outbox
        broken.execute("ALTER TABLE outbox RENAME TO outbox_gone")
    page = browser.get("/console/outbox")
    assert page.status_code == 503 and "text/html" in page.headers["content-type"]
    assert "The state store is unavailable" in page.text
    assert "Traceback" not in page.text and 'File "' not in page.text
    api = browser.get("/v1/outbox", headers={"Authorization": f"Bearer {token}"})
    assert api.status_code == 503 and "json" in api.headers["content-type"]
