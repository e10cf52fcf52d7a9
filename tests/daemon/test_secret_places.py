"""The daemon never sends a secret from outside the allowed places (SPEC S2), whatever
wrote the store: servers committed without validate point their password at the token
key, at the daemon's own API token and at a file reached through a symlink; a real SMTP
peer that would accept any of them receives nothing, and each message fails with the
reason and no value, on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest
from config.helpers import forbidden_secret_file
from peers.smtp import SmtpPeer, free_port

from daemon.app_kit import (
    audit_of,
    commit,
    enqueue,
    mail_settings,
    note,
    run_daemon_until,
    sent,
    settings,
    smtp_server,
)
from reconciler.config.desired import CanonicalResource
from reconciler.daemon.app import Daemon
from reconciler.state import SqlStore
from reconciler.state.base import OutboxState

VALUE = "forbidden-VALUE-must-never-travel-9d9d"
USER = "desk-sender"
API_TOKEN_ENV = "S2_DAEMON_TEST_API_TOKEN"


def with_password(namespace: str, port: int, ref: str) -> CanonicalResource:
    """The one (primary) server of ``namespace``, its password behind ``ref``."""
    return smtp_server("desk", port, namespace=namespace, primary=True, auth={
        "type": "basic", "username": USER, "password": {"secretRef": ref}})


def test_the_daemon_refuses_secrets_from_forbidden_places(
    store: SqlStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secrets = forbidden_secret_file(tmp_path, VALUE)
    monkeypatch.setenv("RECONCILE_SECRET_DIRS", str(secrets))
    monkeypatch.delenv("RECONCILE_SECRET_ENV", raising=False)
    monkeypatch.setenv("RECONCILE_TOKEN_KEY", VALUE)
    monkeypatch.setenv(API_TOKEN_ENV, VALUE)
    peer = SmtpPeer("plain", user=USER, password=VALUE, auth_require_tls=False).start()
    refs = {"token-key": "env:RECONCILE_TOKEN_KEY", "api-token": f"env:{API_TOKEN_ENV}",
            "symlink": f"file:{secrets}/link"}
    try:
        commit(store, *(mail_settings(ns) for ns in refs),
               *(with_password(ns, peer.port, ref) for ns, ref in refs.items()))
        ids = {ns: enqueue(store, note("jane@corp.example", namespace=ns)) for ns in refs}
        daemon = Daemon(settings(store_url="unused", listen_port=free_port(),
                                 api_tokens=(f"env:{API_TOKEN_ENV}",)),
                        store, api=False, health=False, handle_signals=False)

        async def work() -> None:
            for outbox_id in ids.values():
                await sent(store, outbox_id, OutboxState.FAILED)

        run_daemon_until(daemon, work)
    finally:
        peer.stop()
    assert peer.messages == []
    reasons = {name: " ".join(e.reason or "" for e in audit_of(store, outbox_id))
               for name, outbox_id in ids.items()}
    # (the audit masks what follows "password:", the reference included)
    assert "is one of reconciler's own settings" in reasons["token-key"]
    assert "holds one of this daemon's own secrets" in reasons["api-token"]
    assert "is outside the secret directories" in reasons["symlink"]
    for outbox_id in ids.values():
        message = store.outbox.get(outbox_id)
        assert message is not None and VALUE not in (message.last_error or "")
    assert not any(VALUE in text for text in reasons.values())
