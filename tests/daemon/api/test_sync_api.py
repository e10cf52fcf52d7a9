"""The daemon follows git: a signed GitHub push webhook syncs at once, a bad signature is
401, GET /v1/sync shows the state (SPEC X5). A real daemon, git repo and HTTP."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path

import httpx
import pytest
from peers.git_repo import Repo
from peers.smtp import free_port

from reconciler.daemon.app import Daemon
from reconciler.state import open_store
from reconciler.state.contract import SyncPhase

from ..app_kit import run_daemon_until, settings, until

SECRET = "hook-secret-for-tests"
TOKEN = "api-token-for-sync-tests"
CONFIG = """\
apiVersion: reconciler.dev/v1
kind: SyncPolicy
metadata: {name: acme, namespace: acme}
spec: {mode: apply, verify: {enabled: false}}
"""


def signed(body: bytes, secret: str = SECRET) -> dict[str, str]:
    mac = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {"X-Hub-Signature-256": f"sha256={mac}", "X-GitHub-Event": "push"}


def test_a_signed_push_syncs_at_once(repo: Repo, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SYNC_HOOK_SECRET", SECRET)
    monkeypatch.setenv("SYNC_API_TOKEN", TOKEN)
    repo.commit({"config/p.yaml": CONFIG}, "first")
    port = free_port()
    store = open_store(tmp_path / "state.db")
    # One hour between polls: only the webhook can make the second commit live in time.
    daemon = Daemon(settings(
        listen_port=port, api_tokens=("env:SYNC_API_TOKEN",), sync_repo=str(repo.bare),
        sync_path="config", sync_interval_seconds=3600, sync_cache_dir=str(tmp_path / "c"),
        sync_webhook_secret_ref="env:SYNC_HOOK_SECRET"), store, health=False)
    base = f"http://127.0.0.1:{port}"

    async def work() -> None:
        await until(lambda: store.sync.get().phase is SyncPhase.SYNCED, "the first sync")
        second = repo.commit({"config/q.yaml": CONFIG.replace("acme", "beta")}, "second")
        body = json.dumps({"ref": "refs/heads/main", "after": second}).encode()
        async with httpx.AsyncClient(base_url=base) as client:
            bad = await client.post("/v1/sync/webhook", content=body,
                                    headers=signed(body, "wrong"))
            assert bad.status_code == 401
            assert store.sync.get().last_fetched != second
            good = await client.post("/v1/sync/webhook", content=body, headers=signed(body))
            assert good.status_code == 202
            await until(lambda: store.sync.get().last_applied == second, "the pushed commit")
            assert (await client.get("/v1/sync")).status_code == 401
            shown = (await client.get("/v1/sync", headers={
                "Authorization": f"Bearer {TOKEN}"})).json()
        assert shown["state"] == "Synced" and shown["lastAppliedCommit"] == second
        assert shown["source"] == str(repo.bare)

    try:
        run_daemon_until(daemon, work)
    finally:
        store.close()
