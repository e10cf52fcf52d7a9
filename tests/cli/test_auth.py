"""`reconcile auth login` (authorization code + PKCE through a loopback listener) and
`reconcile auth status`, against the local identity provider; the login runs as a
real process and the test plays the browser with httpx."""

from __future__ import annotations

import asyncio
import os
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from health.kit import put_servers
from oauth.kit import CLIENT, MAILBOX, SECRET, _client_secret, oauth_server  # noqa: F401 - fixture
from peers.oauth_server import OAuthPeer
from peers.smtp import free_port

from reconciler.config.models.outgoing_server import OutgoingServer
from reconciler.oauth.provider import provider_for_store
from reconciler.oauth.source import TokenError
from reconciler.state import open_store

from .helpers_history import assert_user_error, run


@pytest.fixture
def db(tmp_path: Path) -> str:
    return str(tmp_path / "state.db")


@pytest.fixture
def redirect() -> str:
    return f"http://127.0.0.1:{free_port()}/oauth/callback"


def stored(db: str, server: OutgoingServer) -> OutgoingServer:
    with open_store(db) as store:
        put_servers(store, server)
    return server


class Login:
    """A running `reconcile auth login` process and the URL it printed."""

    def __init__(self, db: str, idp: OAuthPeer, *extra: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "reconciler", "auth", "login", "default/o365", "--store", db,
             "--ca-file", str(idp.certs.ca_file), "--timeout", "60", "--actor", "jane",
             *extra],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ))
        assert self.proc.stdout is not None
        self.head: list[str] = []
        self.url = ""
        for line in self.proc.stdout:
            self.head.append(line)
            if line.strip().startswith("https://"):
                self.url = line.strip()
                break
        assert self.url, "".join(self.head) + self.proc.stderr.read()  # type: ignore[union-attr]

    def browse(self, idp: OAuthPeer) -> httpx.Response:
        context = ssl.create_default_context(cafile=str(idp.certs.ca_file))
        return httpx.get(self.url, verify=context, follow_redirects=True, timeout=30)

    def finish(self) -> tuple[int, str]:
        out, err = self.proc.communicate(timeout=60)
        return self.proc.returncode, "".join(self.head) + out + err


@pytest.fixture
def cleanup() -> Iterator[list[Login]]:
    logins: list[Login] = []
    yield logins
    for login in logins:
        if login.proc.poll() is None:
            login.proc.kill()
            login.proc.wait()


@pytest.mark.parametrize("provider", ["microsoft", "google"])
def test_login_end_to_end_then_the_daemon_side_refreshes(
        db: str, idp: OAuthPeer, token_key: bytes, redirect: str, provider: str,
        cleanup: list[Login]) -> None:
    idp.register(CLIENT, SECRET, redirect_uris=(redirect,))
    server = stored(db, oauth_server(idp, grant="authorizationCode", provider=provider,
                                     redirect_url=redirect))
    login = Login(db, idp)
    cleanup.append(login)
    assert "code_challenge=" in login.url and "state=" in login.url
    page = login.browse(idp)
    assert page.status_code == 200 and "Signed in" in page.text
    code, output = login.finish()
    assert code == 0, output
    assert f"Signed in default/o365 as {MAILBOX} with a refresh token" in output
    assert idp.count("authorization_code") == 1
    issued = [*idp.access, *idp.refresh]
    assert issued and not any(t in output for t in issued)
    assert SECRET not in output

    history = run("history", "--store", db, "--kind", "auth").output
    assert "jane" in history and f"auth login default/o365 as {MAILBOX}" in history
    assert not any(t in history for t in issued)

    status = run("auth", "status", "--store", db).output
    assert "OutgoingServer/default/o365" in status and MAILBOX in status
    assert "held (encrypted)" in status and "state:          ok" in status
    assert not any(t in status for t in issued)

    # the daemon side: a provider on the same store gets a token from the stored grant
    idp.expire_access_tokens()
    with open_store(db) as store:
        tokens = provider_for_store(store, ca_file=str(idp.certs.ca_file))
        tokens._skew = tokens._skew * 10_000  # the stored access token counts as expiring
        token = asyncio.run(tokens.token(server))
    assert idp.valid_access(token) is not None and idp.count("refresh_token") == 1

    # revoked at the provider: status tells what happened and how to repair it
    idp.revoke_refresh_tokens()
    with open_store(db) as store:
        tokens = provider_for_store(store, ca_file=str(idp.certs.ca_file))
        tokens._skew = tokens._skew * 10_000
        with pytest.raises(TokenError):
            asyncio.run(tokens.token(server))
    status = run("auth", "status", "--store", db).output
    assert "needs attention" in status and "expired or revoked" in status
    assert "reconcile auth login default/o365" in status


def test_consent_refused_in_the_browser_is_a_clear_error(
        db: str, idp: OAuthPeer, token_key: bytes, redirect: str, cleanup: list[Login]) -> None:
    idp.register(CLIENT, SECRET, redirect_uris=(redirect,), consented=False)
    stored(db, oauth_server(idp, grant="authorizationCode", redirect_url=redirect))
    login = Login(db, idp)
    cleanup.append(login)
    assert login.browse(idp).status_code == 400
    code, output = login.finish()
    assert code == 1 and "Traceback" not in output
    assert "no consent" in output and "Grant admin consent" in output
    assert idp.count() == 0


def test_unregistered_redirect_url_is_shown_by_the_provider(
        db: str, idp: OAuthPeer, token_key: bytes, redirect: str, cleanup: list[Login]) -> None:
    idp.register(CLIENT, SECRET, redirect_uris=("http://127.0.0.1:1/elsewhere",))
    stored(db, oauth_server(idp, grant="authorizationCode", redirect_url=redirect))
    login = Login(db, idp, "--timeout", "1")
    cleanup.append(login)
    page = login.browse(idp)
    assert page.status_code == 400 and "AADSTS50011" in page.text
    code, output = login.finish()
    assert code == 1 and "no sign-in answer arrived" in output and "Traceback" not in output


def test_login_refuses_what_it_cannot_do(db: str, idp: OAuthPeer, token_key: bytes,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    stored(db, oauth_server(idp, name="app-only"))
    stored(db, oauth_server(idp, name="remote", grant="authorizationCode",
                            redirect_url="https://desk.example/callback"))
    assert_user_error(run("auth", "login", "app-only", "--store", db, code=1),
                      "client credentials grant", "needs no login")
    assert_user_error(run("auth", "login", "remote", "--store", db, code=1),
                      "must be an http:// URL on this machine")
    assert_user_error(run("auth", "login", "nope", "--store", db, code=1),
                      "no OutgoingServer or IncomingServer 'nope'")
    monkeypatch.delenv("RECONCILE_TOKEN_KEY")
    assert_user_error(run("auth", "login", "remote", "--store", db, code=1),
                      "reconcile secret keygen", "RECONCILE_TOKEN_KEY")


def test_status_before_any_login_and_as_json(db: str, idp: OAuthPeer) -> None:
    stored(db, oauth_server(idp, grant="authorizationCode", redirect_url="http://localhost:1/"))
    text = run("auth", "status", "--store", db).output
    assert "not signed in: run `reconcile auth login default/o365`" in text
    import json

    data = json.loads(run("auth", "status", "--store", db, "--format", "json").output)
    assert data["servers"][0]["grant"] == "authorizationCode"
    assert data["servers"][0]["refreshToken"] is False
