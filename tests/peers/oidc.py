"""A local OpenID Connect provider: discovery, JWKS, authorize and token endpoints,
ID tokens signed RS256 with a key made at test time (cryptography), over HTTPS
(trustme certificate) on 127.0.0.1.

The authorize endpoint needs no browser: it redirects straight back to the
registered ``redirect_uri`` with a code for :attr:`OidcPeer.next_user`. The token
endpoint checks the client secret, the code, the redirect URI and the PKCE
verifier (S256). :attr:`OidcPeer.fault` makes the next ID token wrong in one way
(``signature``, ``audience``, ``issuer``, ``nonce``, ``expired``) for the tests of
what a client must refuse.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey

from peers.smtp import HOST, PeerCerts

REALM = "realm"


def _rsa_key(kid: str) -> RSAKey:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return RSAKey.import_key(pem, {"kid": kid, "use": "sig", "alg": "RS256"})


@dataclass
class _Code:
    client_id: str
    redirect_uri: str
    challenge: str
    nonce: str
    user: str


@dataclass
class OidcPeer:
    certs: PeerCerts
    clients: dict[str, tuple[str, set[str]]] = field(default_factory=dict)
    users: dict[str, dict[str, Any]] = field(default_factory=dict)
    next_user: str = ""
    fault: str | None = None
    codes: dict[str, _Code] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.key = _rsa_key("console-test-1")
        self._server = ThreadingHTTPServer((HOST, 0), _handler(self))
        self._server.daemon_threads = True
        self._server.socket = self.certs.server_context().wrap_socket(
            self._server.socket, server_side=True)
        self.port = int(self._server.server_address[1])
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    @property
    def issuer(self) -> str:
        return f"https://{HOST}:{self.port}/{REALM}"

    def register(self, client_id: str, secret: str, redirect_uri: str) -> None:
        self.clients[client_id] = (secret, {redirect_uri})

    def user(self, login: str, **claims: Any) -> None:
        self.users[login] = {"email": login, **claims}
        self.next_user = login

    def discovery(self) -> dict[str, Any]:
        return {"issuer": self.issuer, "authorization_endpoint": f"{self.issuer}/authorize",
                "token_endpoint": f"{self.issuer}/token", "jwks_uri": f"{self.issuer}/jwks",
                "response_types_supported": ["code"], "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "code_challenge_methods_supported": ["S256"]}

    def authorize(self, query: dict[str, str]) -> tuple[int, str]:
        """(status, Location or error text)."""
        client = self.clients.get(query.get("client_id", ""))
        redirect = query.get("redirect_uri", "")
        if client is None or redirect not in client[1]:
            return 400, "unknown client or unregistered redirect_uri"
        if query.get("response_type") != "code" or query.get("code_challenge_method") != "S256":
            return 400, "this provider wants response_type=code with PKCE S256"
        code = secrets.token_urlsafe(24)
        with self.lock:
            self.codes[code] = _Code(query["client_id"], redirect, query["code_challenge"],
                                     query.get("nonce", ""), self.next_user)
        return 302, f"{redirect}?{urlencode({'code': code, 'state': query.get('state', '')})}"

    def token(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        client = self.clients.get(form.get("client_id", ""))
        if client is None or not secrets.compare_digest(form.get("client_secret", ""),
                                                        client[0]):
            return 401, {"error": "invalid_client"}
        with self.lock:
            code = self.codes.pop(form.get("code", ""), None)
        verifier = form.get("code_verifier", "")
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
        if code is None or code.redirect_uri != form.get("redirect_uri") or \
                challenge.rstrip(b"=").decode() != code.challenge:
            return 400, {"error": "invalid_grant"}
        return 200, {"access_token": secrets.token_urlsafe(24), "token_type": "Bearer",
                     "expires_in": 300, "id_token": self._id_token(code)}

    def _id_token(self, code: _Code) -> str:
        now = int(time.time())
        claims = {"iss": self.issuer, "sub": hashlib.sha256(code.user.encode()).hexdigest(),
                  "aud": code.client_id, "iat": now, "exp": now + 300, "nonce": code.nonce,
                  **self.users[code.user]}
        key = self.key
        fault, self.fault = self.fault, None
        if fault == "signature":
            key = _rsa_key("console-test-1")  # same kid, another key: a forgery
        elif fault == "audience":
            claims["aud"] = "another-client"
        elif fault == "issuer":
            claims["iss"] = f"https://{HOST}:{self.port}/elsewhere"
        elif fault == "nonce":
            claims["nonce"] = "not-the-nonce-sent"
        elif fault == "expired":
            claims.update(iat=now - 7200, exp=now - 3600)
        return jwt.encode({"alg": "RS256", "kid": key.kid}, claims, key)

    def jwks(self) -> dict[str, Any]:
        return KeySet([self.key]).as_dict(private=False)


def _handler(peer: OidcPeer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            return

        def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
            self.send_response(status)
            for name, value in {**headers, "Content-Length": str(len(body)),
                                "Cache-Control": "no-store"}.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def _json(self, status: int, body: dict[str, Any]) -> None:
            self._send(status, json.dumps(body).encode(), {"Content-Type": "application/json"})

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            query = {k: v[0] for k, v in parse_qs(url.query).items()}
            if url.path == f"/{REALM}/.well-known/openid-configuration":
                self._json(200, peer.discovery())
            elif url.path == f"/{REALM}/jwks":
                self._json(200, peer.jwks())
            elif url.path == f"/{REALM}/authorize":
                status, where = peer.authorize(query)
                if status == 302:
                    self._send(302, b"", {"Location": where})
                else:
                    self._send(status, where.encode(), {"Content-Type": "text/plain"})
            else:
                self._json(404, {"error": "not_found"})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
            if urlsplit(self.path).path == f"/{REALM}/token":
                self._json(*peer.token(form))
            else:
                self._json(404, {"error": "not_found"})

    return Handler
