"""`reconcile test-connection` on an EWS or Graph IncomingServer (SPEC I9): every step
against the local EWS and Graph peers, read-only, and a refused password with its fix.
The token of the Graph mailbox comes from the store's provider, as the daemon's does."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from health.kit import put_servers
from mail.fetch_kit import PASSWORD_ENV
from peers.dovecot import sample_mail
from peers.ews_server import EwsPeer
from peers.graph_server import GraphPeer
from peers.oauth_server import OAuthPeer
from peers.smtp import PeerCerts

from reconciler.config.models.incoming_server import IncomingServer
from reconciler.config.sealing import new_key
from reconciler.state import open_store

from .helpers_history import run
from .test_test_connection import marks

USER, PASSWORD = "desk-reader", "ews-Pa55word-never-logged"
STEPS = ["DNS", "TCP", "TLS", "AUTH", "Folder", "Messages", "Sample"]
CLIENT, SECRET, SECRET_ENV = "11111111-2222-3333-4444-555555555555", "Gr4ph~in~secret", "GIN"


@pytest.fixture
def ews(certs: PeerCerts, monkeypatch: pytest.MonkeyPatch) -> Iterator[EwsPeer]:
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
    with EwsPeer(certs, user=USER, password=PASSWORD) as peer:
        yield peer


def check(tmp_path: Path, certs: PeerCerts, server: IncomingServer, *, code: int) -> str:
    db = str(tmp_path / "state.db")
    with open_store(db) as store:
        put_servers(store, server)  # type: ignore[arg-type]
    return run("test-connection", server.metadata.name, "--store", db, "--ca-file",
               certs.ca_file, "--timeout", "20", code=code).output


def basic() -> dict[str, object]:
    return {"type": "basic", "username": USER, "password": {"secretRef": f"env:{PASSWORD_ENV}"}}


def test_an_ews_mailbox_walks_every_step_and_stays_unread(
        ews: EwsPeer, certs: PeerCerts, tmp_path: Path) -> None:
    ews.deliver(sample_mail(4))
    out = check(tmp_path, certs, ews.incoming(auth=basic()), code=0)
    assert out.startswith("Testing IncomingServer default/ews-in: ews localhost:")
    assert marks(out) == [("✓", step) for step in STEPS]
    assert f"logged in as {USER} (basic)" in out
    assert "1 message(s), 1 unread" in out and "Subject Request 4" in out
    assert out.rstrip().endswith("All checks passed; nothing on the server was changed.")
    assert [i.is_read for i in ews.items()] == [False]
    assert PASSWORD not in out


def test_a_wrong_ews_password_fails_at_auth_with_the_fix(
        ews: EwsPeer, certs: PeerCerts, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PASSWORD_ENV, "Wr0ng-PLANTED-pass")
    out = check(tmp_path, certs, ews.incoming(auth=basic()), code=1)
    assert marks(out)[3:] == [("✗", "AUTH"), ("·", "Folder"), ("·", "Messages"),
                              ("·", "Sample")]
    assert "Failed at AUTH: " in out and "Likely fix: " in out
    assert "Wr0ng-PLANTED-pass" not in out


def test_a_graph_mailbox_is_checked_with_a_token_from_the_store_provider(
        certs: PeerCerts, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SECRET_ENV, SECRET)
    monkeypatch.setenv("RECONCILE_TOKEN_KEY", new_key())
    idp = OAuthPeer(certs).start()
    graph = GraphPeer(certs, token="never-issued", accept=idp.valid_access).start()
    try:
        idp.register(CLIENT, SECRET)
        graph.store.deliver("desk@corp.example", sample_mail(5))
        server = IncomingServer.model_validate({
            "apiVersion": "reconciler.dev/v1", "kind": "IncomingServer",
            "metadata": {"name": "m365-in", "namespace": "default"},
            "spec": {"email": "desk@corp.example", "protocol": "graph",
                     "graphEndpoint": graph.endpoint, "auth": {
                         "type": "oauth2", "provider": "microsoft",
                         "grant": "clientCredentials", "clientId": CLIENT,
                         "tenant": "desk-tenant", "tokenUrl": idp.token_url(),
                         "clientSecret": {"secretRef": f"env:{SECRET_ENV}"},
                         "scope": ["https://graph.microsoft.com/.default"]}}})
        out = check(tmp_path, certs, server, code=0)
    finally:
        graph.stop()
        idp.stop()
    assert marks(out) == [("✓", step) for step in STEPS]
    assert "access token accepted for desk@corp.example (oauth2 clientCredentials" in out
    assert "1 message(s), 1 unread" in out and "Subject Request 5" in out
    assert idp.count("client_credentials") == 1
    assert SECRET not in out
