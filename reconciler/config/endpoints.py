"""Which credential a resource presents to which endpoint, from its stored spec.

A credential is named by an id that never holds a value or ciphertext:

- ``secret:env:NAME`` / ``secret:file:/path``: the reference as written;
- ``secret:enc:v1:sha256:<hex>``: an encrypted reference, by the digest of its text
  (shown as ``secret:enc:v1:***<8 hex>``, the fingerprint ``secrets.redact`` shows);
- ``oauth:<provider>/<tenant or ->/<clientId>``: an OAuth client, whose refresh
  token and access tokens are credentials too.

An endpoint is ``host:port`` (what a mail or HTTPS connection presents to) or the
token URL (``https://host:port/path``), where a client secret or refresh token goes.
A proxy in front of a server is not an endpoint of the server's credentials: the
proxy sees a CONNECT and then TLS, like any other network hop. The proxy's own
password is a credential of the ProxyServer, bound to the proxy's host:port.

Everything here is pure and works on the canonical spec (plain JSON with derived
values), so plan, the store, migration 0005 and the daemon agree on one mapping.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import urlsplit

ENC_PREFIX = "enc:v1:"
SECRET = "secret:"
OAUTH = "oauth:"
SERVER_KINDS = frozenset({"OutgoingServer", "IncomingServer"})
KINDS = SERVER_KINDS | {"ProxyServer"}

Pair = tuple[str, str]  # (credential id, endpoint)


def secret_credential(ref: str) -> str:
    if ref.startswith(ENC_PREFIX):
        return f"{SECRET}{ENC_PREFIX}sha256:{hashlib.sha256(ref.encode()).hexdigest()}"
    return SECRET + ref


def oauth_credential(provider: str, tenant: str | None, client_id: str) -> str:
    return f"{OAUTH}{provider}/{tenant or '-'}/{client_id}"


def display(credential: str) -> str:
    """The printable form: an encrypted reference by the fingerprint plans show."""
    marker = f"{SECRET}{ENC_PREFIX}sha256:"
    if credential.startswith(marker):
        return f"{SECRET}{ENC_PREFIX}***{credential[len(marker):][:8]}"
    return credential


def host_endpoint(host: str, port: int) -> str:
    host = host.lower()
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def url_host_endpoint(url: str) -> str:
    """host:port a URL connects to (the scheme's default port when none is written)."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
    return host_endpoint(parts.hostname or "", port)


def token_endpoint(url: str) -> str:
    """A token URL with scheme and host lower-cased and the port written out."""
    parts = urlsplit(url)
    return f"{parts.scheme.lower()}://{url_host_endpoint(url)}{parts.path or '/'}"


def _ref(value: Any) -> str | None:
    if isinstance(value, Mapping) and isinstance(value.get("secretRef"), str):
        return str(value["secretRef"])
    return None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def server_endpoints(spec: Mapping[str, Any]) -> tuple[str, ...]:
    """host:port of every place an Outgoing/IncomingServer spec connects to and
    authenticates at: the main and alternate host, the EWS URL's host, Graph's."""
    protocol = str(spec.get("protocol") or "")
    host, port = spec.get("host"), _int(spec.get("port"))
    out: list[str] = []
    if protocol == "graph":
        if isinstance(spec.get("graphEndpoint"), str):
            out.append(url_host_endpoint(spec["graphEndpoint"]))
        return tuple(out)
    if protocol == "ews":
        if isinstance(spec.get("ewsUrl"), str):
            out.append(url_host_endpoint(spec["ewsUrl"]))
        elif isinstance(host, str):
            out.append(host_endpoint(host, 443))
    elif isinstance(host, str) and port is not None:
        out.append(host_endpoint(host, port))
    alternate = spec.get("alternateHost")
    alt_port = _int(spec.get("alternatePort")) or port
    if isinstance(alternate, str) and alt_port is not None:
        out.append(host_endpoint(alternate, alt_port))
    return tuple(dict.fromkeys(out))


def pairs_of(kind: str, spec: Mapping[str, Any]) -> frozenset[Pair]:
    """Every (credential, endpoint) a resource of ``kind`` presents with this spec."""
    return frozenset(_pairs(kind, spec))


def _pairs(kind: str, spec: Mapping[str, Any]) -> Iterator[Pair]:
    if kind == "ProxyServer":
        ref = _ref(spec.get("password"))
        host, port = spec.get("host"), _int(spec.get("port"))
        if ref and spec.get("username") and isinstance(host, str) and port is not None:
            yield secret_credential(ref), host_endpoint(host, port)
        return
    if kind not in SERVER_KINDS:
        return
    auth = spec.get("auth")
    if not isinstance(auth, Mapping):
        return
    endpoints = server_endpoints(spec)
    if auth.get("type") == "basic":
        ref = _ref(auth.get("password"))
        if ref:
            for endpoint in endpoints:
                yield secret_credential(ref), endpoint
    elif auth.get("type") == "oauth2":
        client = oauth_credential(str(auth.get("provider") or "microsoft"),
                                  auth.get("tenant"), str(auth.get("clientId") or ""))
        # Access tokens are presented where the server connects; the client's
        # secret and refresh token go to the token URL.
        for endpoint in endpoints:
            yield client, endpoint
        token_url = auth.get("tokenUrl")
        if isinstance(token_url, str):
            yield client, token_endpoint(token_url)
            ref = _ref(auth.get("clientSecret"))
            if ref:
                yield secret_credential(ref), token_endpoint(token_url)
