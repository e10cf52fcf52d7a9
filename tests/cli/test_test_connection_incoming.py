"""`reconcile test-connection` on an IncomingServer (SPEC I9) against Dovecot: every step
with IMAP and POP3, read-only (the sampled mail stays unread and on the server), and the
failing steps with their fix: wrong password, missing folder, closed port; through a
proxy the proxy step replaces TCP."""

from __future__ import annotations

import re
from typing import Any

import pytest
from health.kit import put_servers
from mail.fetch_kit import fetch_env, incoming_server  # noqa: F401  (fetch_env: autouse)
from peers.dovecot import DovecotInstance, MailUser, sample_mail
from peers.pproxy_peer import ProxyPeer
from peers.smtp import HOST, PeerCerts, free_port

from reconciler.config.models.proxy_server import ProxyServer
from reconciler.state import open_store

from .helpers_history import run
from .test_test_connection import marks

STEPS_IMAPS = ["DNS", "TCP", "TLS", "Greeting", "AUTH", "Folder", "Messages", "Sample"]


def check(db: str, certs: PeerCerts, *servers: Any, code: int, name: str = "desk") -> str:
    with open_store(db) as store:
        put_servers(store, *servers)
    return run("test-connection", name, "--store", db, "--ca-file", certs.ca_file,
               "--timeout", "20", code=code).output


def test_imaps_walks_every_step_and_changes_nothing(
        dovecot: DovecotInstance, mailbox: MailUser, certs: PeerCerts, tmp_path: Any) -> None:
    dovecot.deliver_many(mailbox, [sample_mail(1), sample_mail(2)])
    db = str(tmp_path / "state.db")
    out = check(db, certs, incoming_server(dovecot, mailbox, "imaps"), code=0)
    assert out.startswith(f"Testing IncomingServer default/desk: imaps {HOST}:{dovecot.imaps}, "
                          "folder INBOX, auth basic\n")
    assert marks(out) == [("✓", step) for step in STEPS_IMAPS]
    assert re.search(r"✓ TLS +implicit TLS, TLSv1\.\d, certificate for 127\.0\.0\.1", out)
    assert f"logged in as {mailbox.name}" in out
    assert "2 message(s), 2 unread" in out
    assert "From customer@example.test; Subject Request 2; Date Fri, 21 Nov 2025" in out
    assert out.rstrip().endswith("All checks passed; nothing on the server was changed.")
    again = run("test-connection", "desk", "--store", db, "--ca-file", certs.ca_file).output
    assert "2 message(s), 2 unread" in again  # EXAMINE and BODY.PEEK: still unread
    assert mailbox.password not in out


def test_pop3_with_starttls_counts_and_samples_without_deleting(
        dovecot: DovecotInstance, mailbox: MailUser, certs: PeerCerts, tmp_path: Any) -> None:
    dovecot.deliver(mailbox, sample_mail(7))
    db = str(tmp_path / "state.db")
    server = incoming_server(dovecot, mailbox, "pop3", starttls=True)
    out = check(db, certs, server, code=0)
    assert marks(out) == [("✓", s) for s in ("DNS", "TCP", "Greeting", "TLS", "AUTH",
                                             "Messages", "Sample")]
    assert re.search(r"✓ TLS +STARTTLS, TLSv1\.\d", out)
    assert "Subject Request 7" in out
    again = run("test-connection", "desk", "--store", db, "--ca-file", certs.ca_file).output
    assert "1 message(s)" in again


def test_a_wrong_password_fails_at_auth_with_the_fix(
        dovecot: DovecotInstance, mailbox: MailUser, certs: PeerCerts, tmp_path: Any,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INCOMING_TEST_PASSWORD", "Wr0ng-PLANTED-pass")
    out = check(str(tmp_path / "s.db"), certs, incoming_server(dovecot, mailbox, "imaps"),
                code=1)
    assert marks(out)[4:] == [("✗", "AUTH"), ("·", "Folder"), ("·", "Messages"),
                              ("·", "Sample")]
    assert f"Failed at AUTH: 127.0.0.1:{dovecot.imaps} refused the login for {mailbox.name}" \
        in out
    assert "Likely fix: Check the username and the password" in out
    assert "Wr0ng-PLANTED-pass" not in out


def test_a_missing_folder_fails_at_folder_and_lists_the_ones_there(
        dovecot: DovecotInstance, mailbox: MailUser, certs: PeerCerts, tmp_path: Any) -> None:
    server = incoming_server(dovecot, mailbox, "imap", starttls=True, folder="Tickets")
    out = check(str(tmp_path / "s.db"), certs, server, code=1)
    assert ("✗", "Folder") in marks(out)
    assert re.search(r"Failed at Folder: .*Tickets cannot be opened .*the mailbox has: "
                     r".*INBOX", out)
    assert "Likely fix: Set folder in the incoming server spec" in out


def test_a_closed_port_fails_at_tcp(dovecot: DovecotInstance, mailbox: MailUser,
                                     certs: PeerCerts, tmp_path: Any) -> None:
    port = free_port()
    out = check(str(tmp_path / "s.db"), certs,
                incoming_server(dovecot, mailbox, "pop3s", port=port), code=1)
    assert marks(out)[:2] == [("✓", "DNS"), ("✗", "TCP")]
    assert f"connection refused by {HOST}:{port}" in out


def test_through_a_proxy_the_proxy_step_replaces_tcp(
        dovecot: DovecotInstance, mailbox: MailUser, certs: PeerCerts, tmp_path: Any,
        proxy_peer: ProxyPeer, proxy_password: str) -> None:
    proxy = ProxyServer.model_validate({
        "apiVersion": "reconciler.dev/v1", "kind": "ProxyServer",
        "metadata": {"name": "corp", "namespace": "default"}, "spec": proxy_peer.spec("http")})
    server = incoming_server(dovecot, mailbox, "imaps", host="localhost", proxy="corp")
    out = check(str(tmp_path / "s.db"), certs, proxy, server, code=0)
    assert [label for _, label in marks(out)][:3] == ["DNS", "Proxy", "TLS"]
    assert f"tunnel to localhost:{dovecot.imaps} through the http proxy" in out
    assert proxy_password not in out



def test_a_name_both_kinds_use_needs_kind(dovecot: DovecotInstance, mailbox: MailUser,
                                          certs: PeerCerts, tmp_path: Any) -> None:
    from peers.smtp import server_spec

    db = str(tmp_path / "s.db")
    with open_store(db) as store:
        put_servers(store, server_spec(free_port(), "plain", "desk"),
                    incoming_server(dovecot, mailbox, "pop3s"))
    run_both = run("test-connection", "desk", "--store", db, code=1).output
    assert "both an OutgoingServer and an IncomingServer are called 'desk'; choose one " \
           "with --kind outgoing or --kind incoming" in run_both
    out = run("test-connection", "desk", "--kind", "incoming", "--store", db, "--ca-file",
              certs.ca_file, code=0).output
    assert out.startswith("Testing IncomingServer default/desk: pop3s")
    needs_to = run("test-connection", "desk", "--kind", "outgoing", "--store", db, code=1)
    assert "--to ADDR is needed for an OutgoingServer" in needs_to.output
