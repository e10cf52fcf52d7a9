"""Sign-in with OpenID Connect, end to end: the console served by uvicorn, a local
provider (peers.oidc) over HTTPS, httpx following the redirects as a browser would."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from daemon.api.api_kit import serve
from peers.oidc import OidcPeer
from peers.smtp import PeerCerts

from reconciler.console.oidc import OidcSettings, parse_role_map
from reconciler.state import SqlStore

from .console_kit import applied_store, console_app, csrf_of

CLIENT_ID = "reconcile-console"
SECRET_ENV = "RECONCILE_TEST_OIDC_SECRET"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqlStore]:
    yield from applied_store(tmp_path / "console.db")


@pytest.fixture
def idp(certs: PeerCerts) -> Iterator[OidcPeer]:
    peer = OidcPeer(certs)
    yield peer
    peer.stop()


@pytest.fixture
def console(store: SqlStore, idp: OidcPeer, certs: PeerCerts,
            monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The console's base URL, registered with the provider."""
    secret = secrets.token_urlsafe(24)
    monkeypatch.setenv(SECRET_ENV, secret)
    app = console_app(store, _NoTokens(), ca_file=str(certs.ca_file),
                      console_oidc_issuer=idp.issuer, console_oidc_client_id=CLIENT_ID,
                      console_oidc_client_secret_ref=f"env:{SECRET_ENV}",
                      console_oidc_namespaces_claim="namespaces",
                      console_oidc_role_map=("desk-ops=operator", "desk-read=viewer"),
                      console_oidc_label="Desk SSO")
    with serve(app) as url:
        idp.register(CLIENT_ID, secret, f"{url}/console/signin/oidc/callback")
        yield url


class _NoTokens:
    def identify(self, presented: str) -> None:
        return None

    def knows(self, principal: object) -> bool:
        return False


def _browser(url: str, certs: PeerCerts) -> httpx.Client:
    return httpx.Client(base_url=url, verify=str(certs.ca_file), follow_redirects=True,
                        timeout=30.0)


def _sign_in(browser: httpx.Client, next_path: str = "/console/servers") -> httpx.Response:
    form = browser.get("/console/signin", params={"next": next_path})
    assert "Sign in with Desk SSO" in form.text
    return browser.get("/console/signin/oidc", params={"next": next_path})


def test_sign_in_through_the_provider_maps_groups_and_namespaces(
        console: str, idp: OidcPeer, certs: PeerCerts) -> None:
    idp.user("ana@desk.example", groups=["staff", "desk-ops"], namespaces=["acme"])
    with _browser(console, certs) as browser:
        landed = _sign_in(browser)
        assert landed.status_code == 200, landed.text
        assert landed.url.path == "/console/signin/oidc/callback"
        assert "Signed in as ana@desk.example" in landed.text
        servers = browser.get("/console/servers")
        assert servers.url.path == "/console/servers"
        assert "acme-main" in servers.text and "default-main" not in servers.text
        assert "Test connection" in servers.text  # desk-ops is operator
        assert browser.post("/console/logout", data={
            "csrf_token": csrf_of(servers.text)}).url.path == "/console/signin"
        assert browser.get("/console/servers").url.path == "/console/signin"


def test_a_user_whose_claims_map_to_no_role_gets_a_403_explaining(
        console: str, idp: OidcPeer, certs: PeerCerts) -> None:
    idp.user("bo@desk.example", groups=["staff"])
    with _browser(console, certs) as browser:
        landed = _sign_in(browser)
        assert landed.status_code == 403
        assert "No console role for this account" in landed.text
        assert "bo@desk.example" in landed.text and "desk-ops" in landed.text
        assert browser.get("/console/servers").url.path == "/console/signin"


@pytest.mark.parametrize("fault", ["signature", "audience", "issuer", "nonce", "expired"])
def test_a_wrong_id_token_is_refused(console: str, idp: OidcPeer, certs: PeerCerts,
                                     fault: str) -> None:
    idp.user("ana@desk.example", groups=["desk-ops"])
    idp.fault = fault
    with _browser(console, certs) as browser:
        landed = _sign_in(browser)
        assert landed.status_code == 401
        assert "the ID token was refused" in landed.text
        assert browser.get("/console/servers").url.path == "/console/signin"


def test_a_callback_not_started_here_is_refused(console: str, idp: OidcPeer,
                                                certs: PeerCerts) -> None:
    idp.user("ana@desk.example", groups=["desk-ops"])
    with _browser(console, certs) as browser:
        reply = browser.get("/console/signin/oidc/callback",
                            params={"code": "x", "state": "forged"})
        assert reply.status_code == 401 and "state mismatch" in reply.text


def test_claims_map_to_roles_and_namespaces() -> None:
    settings = OidcSettings(issuer="https://idp.example", client_id="c",
                            namespaces_claim="ns",
                            role_map=parse_role_map(["ops=operator", "read=viewer"]))
    every: dict[str, Any] = {"email": "a@x", "groups": "read", "ns": ["*"]}
    assert settings.principal(every).namespaces is None
    assert settings.principal({**every, "ns": "acme"}).namespaces == frozenset({"acme"})
    assert settings.principal({**every, "ns": None}).namespaces == frozenset()
    with pytest.raises(ValueError, match="CLAIM-VALUE=ROLE"):
        parse_role_map(["ops=superuser"])
