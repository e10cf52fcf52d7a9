"""The daemon hands one store-backed token provider, sealed with the key its settings
name, to its SMTP transport: an OAuth2 server sends without any test-side provider."""

from __future__ import annotations

from pathlib import Path

import pytest
from mail.smtp.test_transport import envelope_for
from peers.oauth_server import OAuthPeer
from peers.smtp import PeerCerts
from peers.smtp_xoauth2 import XOAuth2Peer

from reconciler.config.sealing import new_key
from reconciler.daemon.app import Daemon
from reconciler.mail.outcome import Outcome
from reconciler.oauth.provider import OAuthTokenProvider, server_key
from reconciler.runtime.settings import DaemonSettings
from reconciler.state import open_store

from .kit import CLIENT, SECRET, oauth_server


async def test_daemon_transport_sends_with_tokens_sealed_by_its_key(
        tmp_path: Path, idp: OAuthPeer, certs: PeerCerts,
        monkeypatch: pytest.MonkeyPatch) -> None:
    key = new_key()
    monkeypatch.setenv("DESK_TOKEN_KEY", key)
    monkeypatch.delenv("RECONCILE_TOKEN_KEY", raising=False)
    idp.register(CLIENT, SECRET)
    mail = XOAuth2Peer(idp, certs=certs).start()
    try:
        server = oauth_server(idp, port=mail.port)
        with open_store(str(tmp_path / "state.db")) as store:
            settings = DaemonSettings(store_url=str(tmp_path / "state.db"),
                                      ca_file=str(certs.ca_file),
                                      token_key_ref="env:DESK_TOKEN_KEY")
            daemon = Daemon(settings, store)
            daemon.store = store
            assert isinstance(daemon.token_provider, OAuthTokenProvider)
            transports = daemon._transports()
            try:
                result = await transports["smtp"].send(envelope_for(server), server)
            finally:
                for transport in transports.values():
                    await transport.aclose()
            assert result.outcome == Outcome.SENT, result.detail
            row = store.tokens.get(server_key(server))
            assert row is not None and row.sealed_text is not None
        assert mail.attempts == [True] and len(mail.messages) == 1
    finally:
        mail.stop()
