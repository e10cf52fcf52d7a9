"""Console sign-in with OpenID Connect: the authorization code flow with PKCE, state
and nonce, against any provider that publishes discovery.

The pieces are Authlib's (PKCE challenge, random values, ID token claim checks) and
joserfc's (the JWS signature against the provider's JWKS), the same two Authlib's
own clients use; this module only wires them into the console's two routes:
``begin`` (the redirect to the provider, with what the callback must check kept in
the signed flow cookie) and ``finish`` (the code exchanged, the ID token checked:
signature, ``iss``, ``aud``, ``exp``, ``nonce``; its claims mapped to a
:class:`~reconciler.runtime.access.Principal`).

Claims map to roles through :attr:`OidcSettings.role_map` (a group or role value
the provider puts in :attr:`OidcSettings.roles_claim` -> a console role) and to
namespaces through :attr:`OidcSettings.namespaces_claim` (its values are the
namespaces; ``*`` means all; unset, every signed-in user sees every namespace).
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

import httpx
from authlib.common.security import generate_token
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from authlib.oidc.core import CodeIDToken
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from joserfc.jws import JWSRegistry
from pydantic import BaseModel, ConfigDict, Field, field_validator

from reconciler.config.secrets import SecretError, redact_ref, resolve_operator
from reconciler.runtime.access import Principal, Role
from reconciler.runtime.settings import DaemonSettings
from reconciler.runtime.tls import tls_context

LEEWAY_SECONDS = 120  # clock skew allowed between this host and the provider


class OidcError(Exception):
    """Sign-in with the provider did not work; the text says why (no secrets)."""


class NoRole(Exception):
    """The provider vouched for the user, but none of their claims maps to a role."""

    def __init__(self, name: str, claim: str, mapped: list[str]) -> None:
        self.name, self.claim, self.mapped = name, claim, mapped
        super().__init__(f"{name} has no console role: their {claim!r} claim holds none of "
                         f"{', '.join(mapped) or '(no values are mapped)'}")


class ConsoleSetupError(SecretError):
    """The console's settings cannot be used; the daemon does not start.

    A :class:`SecretError`, so the CLI prints it as one plain line."""


def parse_role_map(entries: tuple[str, ...] | list[str]) -> dict[str, Role]:
    """``("desk-ops=operator", ...)`` as a mapping; ValueError says which entry is wrong."""
    out: dict[str, Role] = {}
    for entry in entries:
        value, sep, role = entry.rpartition("=")
        try:
            out[value.strip()] = Role(role.strip())
        except ValueError:
            sep = ""
        if not sep or not value.strip():
            raise ValueError(f"role mapping {entry!r}: write CLAIM-VALUE=ROLE with ROLE one "
                             f"of {', '.join(r.value for r in Role)}, e.g. desk-ops=operator")
    return out


class OidcSettings(BaseModel):
    """Where the provider is, who this console is to it, and how claims map."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    issuer: str = Field(pattern=r"^https?://\S+$")
    client_id: str = Field(min_length=1)
    client_secret_ref: str | None = None  # resolved at start; never the secret itself
    scopes: tuple[str, ...] = ("openid", "email", "profile")
    name_claim: str = "email"
    roles_claim: str = "groups"
    namespaces_claim: str | None = None
    role_map: dict[str, Role] = Field(default_factory=dict)
    label: str = "your identity provider"

    @field_validator("scopes")
    @classmethod
    def _openid_scope(cls, scopes: tuple[str, ...]) -> tuple[str, ...]:
        return scopes if "openid" in scopes else ("openid", *scopes)

    @classmethod
    def from_daemon(cls, settings: DaemonSettings) -> OidcSettings | None:
        if not settings.console_oidc_issuer:
            return None
        if not settings.console_oidc_client_id:
            raise ConsoleSetupError("--console-oidc-issuer needs --console-oidc-client-id "
                                    "(the console's client id at the identity provider)")
        try:
            return cls(issuer=settings.console_oidc_issuer.rstrip("/"),
                       client_id=settings.console_oidc_client_id,
                       client_secret_ref=settings.console_oidc_client_secret_ref,
                       scopes=settings.console_oidc_scopes,
                       name_claim=settings.console_oidc_name_claim,
                       roles_claim=settings.console_oidc_roles_claim,
                       namespaces_claim=settings.console_oidc_namespaces_claim,
                       role_map=parse_role_map(settings.console_oidc_role_map),
                       label=settings.console_oidc_label)
        except ValueError as exc:  # pydantic's ValidationError is one too
            raise ConsoleSetupError(f"console OpenID Connect settings: {exc}") from None

    def principal(self, claims: Mapping[str, Any]) -> Principal:
        """The console principal the ID token's claims stand for; :class:`NoRole` when
        none of them maps to a role."""
        name = str(claims.get(self.name_claim) or claims.get("sub") or "")
        roles = {self.role_map[v] for v in _values(claims.get(self.roles_claim))
                 if v in self.role_map}
        if not roles:
            raise NoRole(name, self.roles_claim, sorted(self.role_map))
        namespaces: list[str] | None = None
        if self.namespaces_claim is not None:
            namespaces = _values(claims.get(self.namespaces_claim))
            if "*" in namespaces:
                namespaces = None
        return Principal.of(name, roles, namespaces)


def _values(claim: Any) -> list[str]:
    """A claim holding one value or a list of them (providers do both)."""
    if claim is None:
        return []
    if isinstance(claim, str):
        return claim.split() if " " in claim else [claim]
    if isinstance(claim, list | tuple):
        return [str(v) for v in claim]
    return [str(claim)]


class OidcClient:
    """The console's client at one provider: discovery and keys cached per process."""

    def __init__(self, settings: OidcSettings, *, ca_file: str | None = None) -> None:
        self.settings = settings
        self._secret: str | None = None
        if settings.client_secret_ref:
            try:
                self._secret = resolve_operator(settings.client_secret_ref)
            except SecretError as exc:
                raise ConsoleSetupError(
                    "the console's OpenID Connect client secret "
                    f"({redact_ref(settings.client_secret_ref)}) cannot be resolved: {exc}"
                ) from None
        self._tls = tls_context(ca_file)
        self._metadata: dict[str, Any] | None = None
        self._keys: KeySet | None = None

    def __repr__(self) -> str:
        return f"OidcClient({self.settings.issuer})"

    async def _get(self, url: str) -> dict[str, Any]:
        try:
            async with httpx.AsyncClient(verify=self._tls, timeout=15.0) as http:
                reply = await http.get(url)
                reply.raise_for_status()
                body: dict[str, Any] = reply.json()
                return body
        except (httpx.HTTPError, ValueError) as exc:
            raise OidcError(f"the identity provider did not answer {url}: {exc}") from None

    async def metadata(self) -> dict[str, Any]:
        if self._metadata is None:
            found = await self._get(f"{self.settings.issuer}/.well-known/openid-configuration")
            if found.get("issuer", "").rstrip("/") != self.settings.issuer:
                raise OidcError(f"the provider's discovery names issuer {found.get('issuer')!r}"
                                f", not {self.settings.issuer!r}; fix --console-oidc-issuer")
            self._metadata = found
        return self._metadata

    async def _key_set(self, *, refresh: bool = False) -> KeySet:
        if self._keys is None or refresh:
            meta = await self.metadata()
            self._keys = KeySet.import_key_set(await self._get(meta["jwks_uri"]))  # type: ignore[arg-type]
        return self._keys

    async def begin(self, redirect_uri: str) -> tuple[str, dict[str, str]]:
        """The provider's authorization URL, and the flow values the callback checks."""
        meta = await self.metadata()
        flow = {"state": generate_token(32), "nonce": generate_token(32),
                "verifier": generate_token(64)}
        query = {"response_type": "code", "client_id": self.settings.client_id,
                 "redirect_uri": redirect_uri, "scope": " ".join(self.settings.scopes),
                 "state": flow["state"], "nonce": flow["nonce"],
                 "code_challenge": create_s256_code_challenge(flow["verifier"]),
                 "code_challenge_method": "S256"}
        return f"{meta['authorization_endpoint']}?{urlencode(query)}", flow

    async def finish(self, flow: Mapping[str, str], query: Mapping[str, str],
                     redirect_uri: str) -> Principal:
        """Check the callback against ``flow``, redeem the code, check the ID token."""
        # State first: an error text from a link someone else made is not shown as if
        # the provider had said it.
        if not flow.get("state") or not secrets.compare_digest(
                query.get("state", ""), flow["state"]):
            raise OidcError("the sign-in answer does not belong to a sign-in started here "
                            "(state mismatch, or it took over 10 minutes); sign in again")
        if "error" in query:
            raise OidcError(f"the identity provider refused the sign-in: {query['error']}"
                            f" {query.get('error_description', '')}".rstrip())
        token = await self._redeem(query.get("code", ""), flow["verifier"], redirect_uri)
        claims = await self._checked_claims(token, flow["nonce"])
        return self.settings.principal(claims)

    async def _redeem(self, code: str, verifier: str, redirect_uri: str) -> dict[str, Any]:
        meta = await self.metadata()
        form = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri,
                "client_id": self.settings.client_id, "code_verifier": verifier}
        if self._secret is not None:
            form["client_secret"] = self._secret
        try:
            async with httpx.AsyncClient(verify=self._tls, timeout=15.0) as http:
                reply = await http.post(meta["token_endpoint"], data=form)
            body: dict[str, Any] = reply.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise OidcError(f"the identity provider's token endpoint failed: {exc}") from None
        if reply.status_code != 200 or "id_token" not in body:
            raise OidcError("the identity provider did not exchange the code for an ID "
                            f"token: {body.get('error', reply.status_code)}")
        return body

    async def _checked_claims(self, token: Mapping[str, Any], nonce: str) -> dict[str, Any]:
        meta = await self.metadata()
        algorithms = meta.get("id_token_signing_alg_values_supported") or ["RS256"]
        registry = JWSRegistry(algorithms=[a for a in algorithms if a != "none"])
        try:
            try:
                decoded = jwt.decode(token["id_token"], await self._key_set(), registry=registry)
            except JoseError:  # a key rotated since the set was fetched: once more, fresh
                decoded = jwt.decode(token["id_token"], await self._key_set(refresh=True),
                                     registry=registry)
            claims = CodeIDToken(decoded.claims, decoded.header,
                                 {"iss": {"essential": True, "values": [meta["issuer"]]},
                                  "aud": {"essential": True,
                                          "values": [self.settings.client_id]}},
                                 {"nonce": nonce, "client_id": self.settings.client_id,
                                  "access_token": token.get("access_token")})
            claims.validate(leeway=LEEWAY_SECONDS)
        except (JoseError, ValueError) as exc:
            raise OidcError(f"the ID token was refused: {exc}") from None
        return dict(claims)
