"""A local identity provider speaking the Microsoft identity platform v2.0 and RFC 6749.

:class:`OAuthPeer` is an HTTPS server on 127.0.0.1 (trustme certificate) with

- ``/{tenant}/v2.0/.well-known/openid-configuration`` - what msal reads first;
- ``/{tenant}/oauth2/v2.0/authorize`` - redirects to the registered
  ``redirect_uri`` with ``code`` and ``state`` (or ``error``), or shows an
  AADSTS50011 error page for an unregistered redirect URI, like Entra does;
- ``/{tenant}/oauth2/v2.0/token`` - ``client_credentials``,
  ``authorization_code`` (PKCE S256 checked, id_token with the nonce, client_info)
  and ``refresh_token``; errors as Entra sends them (``error``,
  ``error_description`` with AADSTS text, ``error_codes``, ``correlation_id``);
- ``/generic/authorize`` and ``/generic/token`` - the same grants with
  Google-shaped answers and errors.

Faults the tests switch on: revoke refresh tokens, expire a client secret,
withhold consent; :attr:`token_requests` counts what reached the token endpoint.
:meth:`valid_access` lets the SMTP XOAUTH2 peer check presented tokens.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest

from peers.smtp import HOST, PeerCerts
from reconciler.config.sealing import new_key

GENERIC = "generic"
TOKEN_KEY_ENV = "RECONCILE_TOKEN_KEY"


@pytest.fixture
def idp(certs: PeerCerts) -> Iterator[OAuthPeer]:
    """A running identity provider (fresh per test: its faults and counters are per test)."""
    peer = OAuthPeer(certs).start()
    yield peer
    peer.stop()


@pytest.fixture
def token_key(monkeypatch: pytest.MonkeyPatch) -> bytes:
    """A fresh key for sealing cached tokens, set as RECONCILE_TOKEN_KEY."""
    key = new_key()
    monkeypatch.setenv(TOKEN_KEY_ENV, key)
    return key.encode()


@dataclass
class Client:
    client_id: str
    secret: str | None
    redirect_uris: set[str] = field(default_factory=set)
    consented: bool = True
    secret_expired: bool = False


@dataclass
class Issued:
    client_id: str
    user: str | None
    scope: str
    expires_at: float


@dataclass
class _Code:
    client_id: str
    redirect_uri: str
    challenge: str | None
    scope: str
    user: str
    nonce: str | None
    used: bool = False


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class OAuthPeer:
    def __init__(self, certs: PeerCerts, *, access_lifetime: int = 3600,
                 default_user: str = "helpdesk@desk.example") -> None:
        self.certs = certs
        self.access_lifetime = access_lifetime
        self.default_user = default_user
        self.clients: dict[str, Client] = {}
        self.access: dict[str, Issued] = {}
        self.refresh: dict[str, Issued] = {}
        self.revoked: set[str] = set()
        self.codes: dict[str, _Code] = {}
        self.token_requests: list[str] = []  # grant_type of every token request
        self.lock = threading.Lock()
        self._server = ThreadingHTTPServer((HOST, 0), _handler(self))
        self._server.daemon_threads = True
        self._server.socket = certs.server_context().wrap_socket(
            self._server.socket, server_side=True)
        self.port = int(self._server.server_address[1])
        self._thread: threading.Thread | None = None

    # -- lifecycle --------------------------------------------------------

    def start(self) -> OAuthPeer:
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    # -- addresses ----------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"https://{HOST}:{self.port}"

    def token_url(self, tenant: str = "desk-tenant") -> str:
        return f"{self.base_url}/{tenant}/oauth2/v2.0/token"

    def authorize_url(self, tenant: str = "desk-tenant") -> str:
        return f"{self.base_url}/{tenant}/oauth2/v2.0/authorize"

    @property
    def generic_token_url(self) -> str:
        return f"{self.base_url}/{GENERIC}/token"

    @property
    def generic_authorize_url(self) -> str:
        return f"{self.base_url}/{GENERIC}/authorize"

    # -- set-up and faults ----------------------------------------------------

    def register(self, client_id: str, secret: str | None, *, redirect_uris: tuple[str, ...] = (),
                 consented: bool = True) -> Client:
        client = Client(client_id, secret, set(redirect_uris), consented)
        self.clients[client_id] = client
        return client

    def revoke_refresh_tokens(self) -> None:
        with self.lock:
            self.revoked |= set(self.refresh)

    def expire_access_tokens(self) -> None:
        with self.lock:
            for issued in self.access.values():
                issued.expires_at = 0

    def valid_access(self, token: str) -> Issued | None:
        with self.lock:
            issued = self.access.get(token)
        if issued is None or issued.expires_at < time.time():
            return None
        return issued

    def count(self, grant_type: str | None = None) -> int:
        return sum(1 for g in self.token_requests if grant_type in (None, g))

    # -- what the endpoints do --------------------------------------------------

    def issue(self, client_id: str, user: str | None, scope: str, *,
              with_refresh: bool) -> dict[str, Any]:
        access = "at-" + secrets.token_urlsafe(24)
        expires = time.time() + self.access_lifetime
        body: dict[str, Any] = {"token_type": "Bearer", "scope": scope,
                                "expires_in": self.access_lifetime,
                                "ext_expires_in": self.access_lifetime,
                                "access_token": access}
        with self.lock:
            self.access[access] = Issued(client_id, user, scope, expires)
            if with_refresh:
                refresh = "rt-" + secrets.token_urlsafe(32)
                self.refresh[refresh] = Issued(client_id, user, scope, expires + 86400 * 90)
                body["refresh_token"] = refresh
        return body


def _ms_error(status: int, error: str, code: int, text: str) -> tuple[int, dict[str, Any]]:
    corr = str(uuid.uuid4())
    return status, {
        "error": error,
        "error_description": f"AADSTS{code}: {text} Trace ID: {uuid.uuid4()} Correlation ID: "
                             f"{corr} Timestamp: 2024-07-01 10:00:00Z",
        "error_codes": [code], "timestamp": "2024-07-01 10:00:00Z",
        "trace_id": str(uuid.uuid4()), "correlation_id": corr,
        "error_uri": f"https://login.microsoftonline.com/error?code={code}",
    }


def _google_error(status: int, error: str, text: str) -> tuple[int, dict[str, Any]]:
    return status, {"error": error, "error_description": text}


def _id_token(peer: OAuthPeer, client_id: str, user: str, nonce: str | None,
              tenant: str) -> str:
    now = int(time.time())
    claims = {"aud": client_id, "iss": f"{peer.base_url}/{tenant}/v2.0", "iat": now,
              "nbf": now, "exp": now + 3600, "sub": _b64url(user.encode()),
              "oid": str(uuid.uuid5(uuid.NAMESPACE_DNS, user)), "tid": str(uuid.uuid5(
                  uuid.NAMESPACE_DNS, tenant)),
              "preferred_username": user, "name": user, "ver": "2.0"}
    if nonce:
        claims["nonce"] = nonce
    header = _b64url(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    return f"{header}.{_b64url(json.dumps(claims).encode())}."


def _token(peer: OAuthPeer, tenant: str, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
    ms = tenant != GENERIC
    grant = form.get("grant_type", "")
    with peer.lock:
        peer.token_requests.append(grant)
    client = peer.clients.get(form.get("client_id", ""))
    if client is None:
        return (_ms_error(400, "unauthorized_client", 700016,
                          f"Application with identifier '{form.get('client_id')}' was not "
                          f"found in the directory '{tenant}'.") if ms
                else _google_error(401, "invalid_client", "The OAuth client was not found."))
    if client.secret is not None:
        if client.secret_expired:
            return (_ms_error(401, "invalid_client", 7000222,
                              "The provided client secret keys for app "
                              f"'{client.client_id}' are expired.") if ms
                    else _google_error(401, "invalid_client", "Unauthorized"))
        if form.get("client_secret") != client.secret:
            return (_ms_error(401, "invalid_client", 7000215,
                              "Invalid client secret provided. Ensure the secret being sent "
                              "in the request is the client secret value, not the client "
                              "secret ID.") if ms
                    else _google_error(401, "invalid_client", "Unauthorized"))
    if not client.consented:
        return (_ms_error(400, "invalid_grant", 65001,
                          "The user or administrator has not consented to use the "
                          f"application with ID '{client.client_id}'.") if ms
                else _google_error(400, "access_denied", "consent required"))
    if grant == "client_credentials":
        return 200, peer.issue(client.client_id, None, form.get("scope", ""),
                               with_refresh=False)
    if grant == "authorization_code":
        with peer.lock:
            code = peer.codes.get(form.get("code", ""))
            reuse = code is not None and code.used
            if code is not None:
                code.used = True
        if code is None or reuse or code.client_id != client.client_id:
            return (_ms_error(400, "invalid_grant", 54005 if reuse else 70000,
                              "The provided value for the 'code' parameter is not valid.")
                    if ms else _google_error(400, "invalid_grant", "Malformed auth code."))
        if form.get("redirect_uri") != code.redirect_uri:
            return (_ms_error(400, "invalid_grant", 50011, "The redirect URI does not match "
                              "the one of the authorization request.") if ms
                    else _google_error(400, "redirect_uri_mismatch", "Bad Request"))
        verifier = form.get("code_verifier", "")
        if code.challenge and _b64url(hashlib.sha256(verifier.encode()).digest()) \
                != code.challenge:
            return (_ms_error(400, "invalid_grant", 501481, "The Code_Verifier does not match "
                              "the code_challenge supplied in the authorization request.")
                    if ms else _google_error(400, "invalid_grant", "Invalid code verifier."))
        body = peer.issue(client.client_id, code.user, code.scope, with_refresh=True)
        if ms:
            body["id_token"] = _id_token(peer, client.client_id, code.user, code.nonce, tenant)
            if form.get("client_info") == "1":
                body["client_info"] = _b64url(json.dumps({
                    "uid": str(uuid.uuid5(uuid.NAMESPACE_DNS, code.user)),
                    "utid": str(uuid.uuid5(uuid.NAMESPACE_DNS, tenant))}).encode())
        return 200, body
    if grant == "refresh_token":
        token = form.get("refresh_token", "")
        with peer.lock:
            issued = peer.refresh.get(token)
            revoked = token in peer.revoked
        if issued is None or revoked or issued.client_id != client.client_id:
            return (_ms_error(400, "invalid_grant", 70008,
                              "The provided authorization code or refresh token has expired "
                              "due to inactivity. Send a new interactive authorization "
                              "request for this user and resource.") if ms
                    else _google_error(400, "invalid_grant", "Token has been expired or "
                                       "revoked."))
        body = peer.issue(client.client_id, issued.user, issued.scope, with_refresh=ms)
        if ms and form.get("client_info") == "1" and issued.user:
            body["client_info"] = _b64url(json.dumps({
                "uid": str(uuid.uuid5(uuid.NAMESPACE_DNS, issued.user)),
                "utid": str(uuid.uuid5(uuid.NAMESPACE_DNS, tenant))}).encode())
        return 200, body
    return (_ms_error(400, "unsupported_grant_type", 70003, "The app requested an "
                      "unsupported grant type.") if ms
            else _google_error(400, "unsupported_grant_type", "Invalid grant_type."))


def _authorize(peer: OAuthPeer, tenant: str,
               query: dict[str, str]) -> tuple[int, dict[str, str], str]:
    """(status, headers, html body)."""
    client = peer.clients.get(query.get("client_id", ""))
    if client is None:
        return 400, {}, "<html><body>AADSTS700016: Application not found.</body></html>"
    redirect = query.get("redirect_uri", "")
    if redirect not in client.redirect_uris:
        return 400, {}, (
            "<html><body>AADSTS50011: The redirect URI '" + redirect + "' specified in the "
            "request does not match the redirect URIs configured for the application "
            f"'{client.client_id}'.</body></html>")
    state = query.get("state", "")
    if not client.consented:
        params = {"error": "consent_required", "state": state,
                  "error_description": "AADSTS65001: The user or administrator has not "
                                       "consented to use the application."}
        return 302, {"Location": f"{redirect}?{urlencode(params)}"}, ""
    user = query.get("login_hint") or peer.default_user
    code = "code-" + secrets.token_urlsafe(24)
    with peer.lock:
        peer.codes[code] = _Code(client.client_id, redirect, query.get("code_challenge"),
                                 query.get("scope", ""), user, query.get("nonce"))
    params = {"code": code, "state": state}
    if tenant != GENERIC:
        params["session_state"] = str(uuid.uuid4())
    return 302, {"Location": f"{redirect}?{urlencode(params)}"}, ""


def _openid(peer: OAuthPeer, tenant: str) -> dict[str, Any]:
    base = f"{peer.base_url}/{tenant}"
    return {
        "token_endpoint": f"{base}/oauth2/v2.0/token",
        "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
        "issuer": f"{base}/v2.0",
        "jwks_uri": f"{base}/discovery/v2.0/keys",
        "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt",
                                                  "client_secret_basic"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "tenant_region_scope": "EU",
        "cloud_instance_name": "microsoftonline.com",
    }


def _handler(peer: OAuthPeer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            return

        def _send(self, status: int, body: bytes, content_type: str,
                  headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def _json(self, status: int, body: dict[str, Any]) -> None:
            self._send(status, json.dumps(body).encode(), "application/json; charset=utf-8")

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            parts = url.path.strip("/").split("/")
            query = {k: v[0] for k, v in parse_qs(url.query).items()}
            tenant = parts[0] if parts else ""
            if url.path.endswith("/v2.0/.well-known/openid-configuration"):
                self._json(200, _openid(peer, tenant))
            elif url.path.endswith("/oauth2/v2.0/authorize") or \
                    url.path == f"/{GENERIC}/authorize":
                status, headers, html = _authorize(peer, tenant, query)
                self._send(status, html.encode(), "text/html; charset=utf-8", headers)
            else:
                self._json(404, {"error": "not_found"})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length).decode()
            form = {k: v[0] for k, v in parse_qs(raw).items()}
            url = urlsplit(self.path)
            tenant = url.path.strip("/").split("/")[0]
            if url.path.endswith("/oauth2/v2.0/token") or url.path == f"/{GENERIC}/token":
                status, body = _token(peer, tenant, form)
                self._json(status, body)
            else:
                self._json(404, {"error": "not_found"})

    return Handler
