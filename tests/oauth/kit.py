"""Shared pieces of the OAuth tests: the identity-provider peer, a sealing key,
and OutgoingServer resources whose auth block points at the peer."""

from __future__ import annotations

from typing import Any

import pytest
from peers.oauth_server import OAuthPeer
from peers.smtp import server_spec

from reconciler.config.models.outgoing_server import OutgoingServer

CLIENT = "11111111-2222-3333-4444-555555555555"
SECRET = "S3cr3t~client~value~q8Z"  # distinctive: grepped for in logs and the DB
SECRET_ENV = "DESK_OAUTH_SECRET"
MAILBOX = "helpdesk@desk.example"


@pytest.fixture(autouse=True)
def _client_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SECRET_ENV, SECRET)


def oauth_server(idp: OAuthPeer, *, name: str = "o365", port: int = 25, mode: Any = "starttls",
                 grant: str = "clientCredentials", provider: str = "microsoft",
                 redirect_url: str | None = None, **auth: Any) -> OutgoingServer:
    """An OutgoingServer on 127.0.0.1:``port`` authenticating with OAuth2 at ``idp``."""
    generic = provider != "microsoft"
    block: dict[str, Any] = {
        "type": "oauth2", "provider": provider, "grant": grant, "clientId": CLIENT,
        "clientSecret": {"secretRef": f"env:{SECRET_ENV}"},
        "tokenUrl": idp.generic_token_url if generic else idp.token_url(),
        "authorizationUrl": idp.generic_authorize_url if generic else idp.authorize_url(),
        "scope": (["https://mail.google.com/"] if generic else
                  ["https://outlook.office365.com/.default"] if grant == "clientCredentials"
                  else ["https://outlook.office365.com/SMTP.Send", "offline_access"]),
        "username": MAILBOX,
    }
    if redirect_url:
        block["redirectUrl"] = redirect_url
    block.update(auth)
    return server_spec(port, mode, name, email=MAILBOX, auth=block)
