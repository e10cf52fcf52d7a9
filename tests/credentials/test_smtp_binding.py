"""SPEC S2 end to end with real SMTP peers: a password goes only to the host:port an
apply bound it to, whatever moved the server (``live set``) — sends and health probes
alike — until an apply with an explicit approval moves it, which history records."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from daemon.app_kit import (
    API,
    audit_of,
    enqueue,
    finished,
    note,
    reconcile,
    running_worker,
    until,
    write_config,
)
from peers.smtp import SmtpPeer

from reconciler.config.desired import ResourceKey
from reconciler.credentials import gate
from reconciler.health.probes import probe_server
from reconciler.mail.probe_options import ProbeOptions
from reconciler.mail.steps import Reason, Step
from reconciler.runtime.namespace import resource_from_canonical
from reconciler.state import OutboxState, open_store

USER = "desk"
PASSWORD = "pw-VALUE-that-must-stay-home-71c3"
ENV = "S2_SMTP_PASSWORD"
KEY = ResourceKey("OutgoingServer", "default", "desk")


@pytest.fixture(autouse=True)
def _password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV, PASSWORD)


def config(directory: Path, port: int) -> Path:
    return write_config(directory, (
        f"apiVersion: {API}\nkind: OutgoingServer\nmetadata:\n  name: desk\n"
        "  labels: {env: dev}\nspec:\n  email: desk@desk.example\n"
        f"  replyTo: support@desk.example\n  host: 127.0.0.1\n  port: {port}\n"
        "  security: none\n  primary: true\n  timeoutSeconds: 5\n"
        f"  auth:\n    type: basic\n    username: {USER}\n"
        f"    password: {{secretRef: env:{ENV}}}\n"
    ), (
        f"apiVersion: {API}\nkind: MailSettings\nmetadata:\n  name: settings\nspec:\n"
        "  retry: {initialBackoffSeconds: 0.05, maxBackoffSeconds: 0.1, maxAttempts: 3}\n"
    ))


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, (result.stdout, result.stderr)
    return result.stdout


def ok_or_changes(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode in (0, 2), result.stderr  # plan: 2 means "there are changes"
    return result.stdout


def peer(peer_factory: Callable[..., SmtpPeer]) -> SmtpPeer:
    return peer_factory("plain", user=USER, password=PASSWORD, auth_require_tls=False)


async def send_one(store_url: str) -> tuple[OutboxState, str]:
    with open_store(store_url) as store:
        async with running_worker(store):
            outbox_id = enqueue(store, note("jane@corp.example"))
            final = await until(lambda: finished(store, outbox_id), "the message to finish")
            reasons = " | ".join(e.reason for e in audit_of(store, outbox_id))
            return final.state, reasons


async def test_live_set_to_another_port_never_sends_the_password_there(
        store_url: str, tmp_path: Path, peer_factory: Callable[..., SmtpPeer]) -> None:
    a, b = peer(peer_factory), peer(peer_factory)
    ok(reconcile("apply", config(tmp_path / "cfg", a.port), "--store", store_url, "--yes"))
    # An out-of-band edit moves the server to b, keeping its secret reference.
    ok(reconcile("live", "set", "OutgoingServer/desk", f"port={b.port}", "--store", store_url,
                 "--reason", "emergency move"))

    state, reasons = await send_one(store_url)
    assert state is OutboxState.FAILED
    assert f"not bound to 127.0.0.1:{b.port}" in reasons and f"127.0.0.1:{a.port}" in reasons
    assert PASSWORD not in reasons
    assert b.auth_attempts == [] and b.messages == []

    # The health probe (the leader runs it every minute) is held back the same way.
    with open_store(store_url) as store:
        gate.load(store)
        server = resource_from_canonical(store.snapshot().resources[KEY])
    report = await probe_server(server, options=ProbeOptions())  # type: ignore[arg-type]
    failed = report.failed
    assert failed is not None and failed.step == Step.AUTH
    assert failed.reason == Reason.NOT_BOUND
    assert f"not bound to 127.0.0.1:{b.port}" in failed.detail
    assert b.auth_attempts == [] and a.auth_attempts == []


async def test_an_approved_apply_moves_the_password_and_history_says_who(
        store_url: str, tmp_path: Path, peer_factory: Callable[..., SmtpPeer]) -> None:
    a, b = peer(peer_factory), peer(peer_factory)
    cfg = tmp_path / "cfg"
    ok(reconcile("apply", config(cfg, a.port), "--store", store_url, "--yes"))
    state, _ = await send_one(store_url)
    assert state is OutboxState.SENT and a.auth_attempts and a.messages

    config(cfg, b.port)
    plan = json.loads(ok_or_changes(reconcile("plan", cfg, "--store", store_url,
                                              "--format", "json")))
    assert [(m["credential"], m["endpoint"], m["boundTo"]) for m in plan["credentialMoves"]] == [
        (f"secret:env:{ENV}", f"127.0.0.1:{b.port}", [f"127.0.0.1:{a.port}"])]

    refused = reconcile("apply", cfg, "--store", store_url, "--yes")
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert f"secret:env:{ENV} -> 127.0.0.1:{b.port}" in refused.stderr
    assert "--approve-credential-move OutgoingServer/desk" in refused.stderr
    with open_store(store_url) as store:
        assert store.head() == 1  # nothing applied

    ok(reconcile("apply", cfg, "--store", store_url, "--yes", "--actor", "maria",
                 "--approve-credential-move", "OutgoingServer/desk"))
    state, _ = await send_one(store_url)
    assert state is OutboxState.SENT
    assert b.auth_attempts == [f"PLAIN {USER}"] or b.auth_attempts == [f"LOGIN {USER}"]
    assert len(b.messages) == 1 and b.messages[0].login == USER

    shown = json.loads(ok(reconcile("history", "show", "2", "--store", store_url,
                                    "--format", "json")))
    assert shown["actor"] == "maria"
    assert shown["credentialMoves"] == [{
        "resource": "OutgoingServer/default/desk", "credential": f"secret:env:{ENV}",
        "endpoint": f"127.0.0.1:{b.port}", "boundTo": [f"127.0.0.1:{a.port}"],
        "approval": "OutgoingServer/desk", "approvedBy": "maria"}]
    assert "history OK" in ok(reconcile("history", "verify", "--store", store_url))

