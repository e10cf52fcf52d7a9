"""Talking to identity providers: one :class:`Flow` per provider family.

- :class:`MicrosoftFlow` uses msal (SPEC O11): ``ConfidentialClientApplication``
  (or ``PublicClientApplication`` without a secret), authority taken from the
  configured ``tokenUrl`` (so national clouds and test peers are pure config),
  ``instance_discovery=False`` because the authority is always explicit, and
  a ``requests`` session trusting the system CAs plus ``ca_file``. msal's
  token cache is serialized into the sealed row so delegated refreshes use
  msal's own account and refresh-token bookkeeping.
- :class:`GenericFlow` posts RFC 6749 requests to ``tokenUrl`` with httpx
  (Google and any standard provider).

Both raise :class:`FlowError` carrying an :class:`~reconciler.oauth.errors.OAuthProblem`;
no token or secret is ever part of an error text.
"""

from __future__ import annotations

import asyncio
import atexit
import base64
import functools
import hashlib
import secrets
import tempfile
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

from reconciler.config.derive import MICROSOFT_AUTHORITIES
from reconciler.config.models.auth import OAuth2Auth, OAuthProvider
from reconciler.config.secrets import SecretError
from reconciler.credentials.gate import (
    FIX,
    CredentialNotBound,
    client_secret_for_token_url,
    require_token_url,
)
from reconciler.oauth.errors import OAuthProblem, classify

TOKEN_PATH = "/oauth2/v2.0/token"
# msal adds these itself and refuses them in ``scopes``.
MSAL_RESERVED = frozenset({"openid", "profile", "offline_access"})
HTTP_TIMEOUT = 30.0
_KNOWN_HOSTS = frozenset(urlsplit(u).hostname for u in MICROSOFT_AUTHORITIES.values())


class FlowError(Exception):
    def __init__(self, problem: OAuthProblem) -> None:
        super().__init__(str(problem))
        self.problem = problem


@dataclass
class Grant:
    """What a token request returned (kept in memory only until it is sealed)."""

    access_token: str
    expires_in: float
    refresh_token: str | None = None
    msal_cache: str | None = None
    account: str | None = None


@dataclass
class LoginRequest:
    """An authorization request in progress: the URL to open, and what checks the answer."""

    url: str
    state: str
    context: dict[str, Any]


def _grant(body: dict[str, Any], refresh_token: str | None = None, account: str | None = None,
           msal_cache: str | None = None) -> Grant:
    """A token response as a Grant; a response without a new refresh token keeps the old."""
    return Grant(body["access_token"], float(body.get("expires_in") or 3600),
                 body.get("refresh_token") or refresh_token, msal_cache, account)


def _config_problem(message: str, fix: str) -> FlowError:
    return FlowError(OAuthProblem(message, fix, True, "configuration"))


def _unreachable(what: str, exc: BaseException) -> FlowError:
    return FlowError(OAuthProblem(
        f"cannot reach the identity provider ({what}: {type(exc).__name__})",
        "Check network access to the token URL; the request is retried later.", False,
        "unreachable"))


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(64)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    return verifier, challenge.rstrip(b"=").decode()


def client_secret(auth: OAuth2Auth, *, required: bool) -> str | None:
    """The client secret for a token request. Every flow asks this before it talks to the
    token URL, so it is also where the client and its secret must be bound to that URL
    (SPEC S2): an unbound one stops the request before anything is sent."""
    try:
        require_token_url(auth)
    except CredentialNotBound as exc:
        raise _config_problem(str(exc), FIX) from None
    if auth.client_secret is None:
        if required:
            raise _config_problem("the client credentials grant needs clientSecret",
                                  "Add clientSecret: {secretRef: ...} to the auth block.")
        return None
    try:
        return client_secret_for_token_url(auth)
    except CredentialNotBound as exc:
        raise _config_problem(str(exc), FIX) from None
    except SecretError as exc:
        raise _config_problem(f"cannot read the client secret: {exc}",
                              "Set the variable or file the secretRef names.") from None


@functools.cache
def _bundle(ca_file: str) -> str:
    """System CAs plus ``ca_file`` as one PEM file (requests takes a single bundle)."""
    from requests.certs import where

    text = Path(where()).read_text() + "\n" + Path(ca_file).read_text()
    with tempfile.NamedTemporaryFile("w", suffix=".pem", prefix="reconcile-ca-",
                                     delete=False) as handle:
        handle.write(text)
    atexit.register(Path(handle.name).unlink, missing_ok=True)
    return handle.name


class Flow(ABC):
    def __init__(self, auth: OAuth2Auth, *, ca_file: str | None = None,
                 server: str | None = None) -> None:
        self.auth = auth
        self.ca_file = ca_file
        self.server = server  # NAMESPACE/NAME for hints

    @abstractmethod
    async def client_credentials(self) -> Grant: ...

    @abstractmethod
    async def refresh(self, refresh_token: str | None, msal_cache: str | None,
                      account: str | None) -> Grant: ...

    @abstractmethod
    def begin_login(self, redirect_uri: str, login_hint: str | None) -> LoginRequest: ...

    async def finish_login(self, request: LoginRequest, response: dict[str, str]) -> Grant:
        """The grant for ``response``, the query of the identity provider's redirect."""
        if response.get("state") != request.state:
            raise FlowError(OAuthProblem(
                "the sign-in answer does not belong to this login (state mismatch)",
                "Start `reconcile auth login` again and use the URL it prints.", True, "state"))
        if "error" in response:
            raise self._fail(dict(response))
        return await self._redeem(request, response)

    @abstractmethod
    async def _redeem(self, request: LoginRequest, response: dict[str, str]) -> Grant:
        """Exchange the authorization code of a checked, error-free ``response``."""

    def _fail(self, body: dict[str, Any] | None, status: int | None = None) -> FlowError:
        return FlowError(classify(body, status=status, server=self.server))


def flow_for(auth: OAuth2Auth, *, ca_file: str | None = None, server: str | None = None) -> Flow:
    if auth.provider == OAuthProvider.MICROSOFT:
        return MicrosoftFlow(auth, ca_file=ca_file, server=server)
    return GenericFlow(auth, ca_file=ca_file, server=server)


# -- Microsoft (msal) -------------------------------------------------------------


class MicrosoftFlow(Flow):
    def _authority(self) -> str:
        url = str(self.auth.token_url or "")
        if not url.endswith(TOKEN_PATH):
            raise _config_problem(
                f"tokenUrl {url or '(unset)'} is not a Microsoft identity platform v2.0 "
                "token endpoint",
                "Use https://login.microsoftonline.com/TENANT/oauth2/v2.0/token (or leave "
                "tokenUrl unset and set tenant).")
        return url[: -len(TOKEN_PATH)]

    def _scopes(self) -> list[str]:
        return [s for s in (self.auth.scope or []) if s not in MSAL_RESERVED]

    def _app(self, cache_blob: str | None, *, secret_required: bool) -> tuple[Any, Any]:
        import msal
        import requests

        authority = self._authority()
        session = requests.Session()
        if self.ca_file:
            # REQUESTS_CA_BUNDLE would silently replace a session's bundle, so the
            # environment is not consulted; proxies from it are taken over explicitly.
            session.trust_env = False
            session.proxies.update(requests.utils.get_environ_proxies(authority))
            session.verify = _bundle(str(self.ca_file))
        cache = msal.SerializableTokenCache()
        if cache_blob:
            cache.deserialize(cache_blob)
        secret = client_secret(self.auth, required=secret_required)
        common: dict[str, Any] = {
            "authority": authority, "http_client": session, "token_cache": cache,
            "instance_discovery": False, "timeout": HTTP_TIMEOUT,
            "validate_authority": urlsplit(authority).hostname in _KNOWN_HOSTS,
        }
        try:
            if secret is None:
                app = msal.PublicClientApplication(self.auth.client_id, **common)
            else:
                app = msal.ConfidentialClientApplication(
                    self.auth.client_id, client_credential=secret, **common)
        except requests.RequestException as exc:
            raise _unreachable(authority, exc) from None
        except ValueError:
            # msal could not read the OpenID configuration of the authority
            raise FlowError(OAuthProblem(
                f"the authority {authority} has no OpenID configuration",
                "Check tenant (or tokenUrl) and the national cloud; the tenant id or "
                "domain must exist.", True, "authority")) from None
        return app, cache

    async def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        import requests

        try:
            return await asyncio.to_thread(fn, *args, **kwargs)
        except requests.RequestException as exc:
            raise _unreachable(self._authority(), exc) from None

    def _msal_grant(self, result: dict[str, Any] | None, cache: Any,
               refresh_token: str | None = None, account: str | None = None) -> Grant:
        if not result or "access_token" not in result:
            raise self._fail(result or {"error": "no_token"})
        claims = result.get("id_token_claims") or {}
        return _grant(result, refresh_token, claims.get("preferred_username") or account,
                      cache.serialize() if cache is not None else None)

    async def client_credentials(self) -> Grant:
        app, _ = await asyncio.to_thread(self._app, None, secret_required=True)
        result = await self._call(app.acquire_token_for_client, self._scopes())
        return self._msal_grant(result, None)

    async def refresh(self, refresh_token: str | None, msal_cache: str | None,
                      account: str | None) -> Grant:
        app, cache = await asyncio.to_thread(self._app, msal_cache, secret_required=False)
        result: dict[str, Any] | None = None
        accounts = app.get_accounts(username=account) if account else []
        accounts = accounts or app.get_accounts()
        if accounts:
            result = await self._call(app.acquire_token_silent_with_error, self._scopes(),
                                      accounts[0], force_refresh=True)
        if result is None and refresh_token:
            result = await self._call(app.acquire_token_by_refresh_token, refresh_token,
                                      self._scopes())
        if result is None:
            raise self._fail({"error": "invalid_grant",
                              "error_description": "no refresh token is stored"})
        return self._msal_grant(result, cache, refresh_token, account)

    def begin_login(self, redirect_uri: str, login_hint: str | None) -> LoginRequest:
        import warnings

        app, cache = self._app(None, secret_required=False)
        with warnings.catch_warnings():
            # msal recommends form_post; a loopback listener receives a GET, and the
            # code is useless without the PKCE verifier this process alone holds.
            warnings.simplefilter("ignore", UserWarning)
            flow = app.initiate_auth_code_flow(self._scopes(), redirect_uri=redirect_uri,
                                               login_hint=login_hint)
        return LoginRequest(flow["auth_uri"], flow["state"],
                            {"flow": flow, "app": app, "cache": cache})

    async def _redeem(self, request: LoginRequest, response: dict[str, str]) -> Grant:
        app, cache = request.context["app"], request.context["cache"]
        result = await self._call(app.acquire_token_by_auth_code_flow,
                                  request.context["flow"], response)
        return self._msal_grant(result, cache)


# -- RFC 6749 over httpx (Google, generic) ------------------------------------------


class GenericFlow(Flow):
    async def _post(self, data: dict[str, str]) -> dict[str, Any]:
        import httpx

        from reconciler.runtime.tls import tls_context

        url = str(self.auth.token_url or "")
        if not url:
            raise _config_problem("the auth block has no tokenUrl",
                                  "Set tokenUrl to the provider's token endpoint.")
        secret = client_secret(self.auth, required=data["grant_type"] == "client_credentials")
        data = {**data, "client_id": self.auth.client_id}
        if secret is not None:
            data["client_secret"] = secret
        try:
            async with httpx.AsyncClient(verify=tls_context(self.ca_file),
                                         timeout=HTTP_TIMEOUT, trust_env=False) as client:
                reply = await client.post(url, data=data, headers={"Accept": "application/json"})
        except httpx.HTTPError as exc:
            raise _unreachable(urlsplit(url).netloc, exc) from None
        try:
            body = reply.json()
        except ValueError:
            body = None
        if reply.status_code != 200 or not isinstance(body, dict) \
                or "access_token" not in body:
            raise self._fail(body if isinstance(body, dict) else None, reply.status_code)
        return body

    def _scope(self) -> str:
        return " ".join(self.auth.scope or [])

    async def client_credentials(self) -> Grant:
        return _grant(await self._post({"grant_type": "client_credentials",
                                        "scope": self._scope()}))

    async def refresh(self, refresh_token: str | None, msal_cache: str | None,
                      account: str | None) -> Grant:
        if not refresh_token:
            raise self._fail({"error": "invalid_grant",
                              "error_description": "no refresh token is stored"})
        body = await self._post({"grant_type": "refresh_token", "refresh_token": refresh_token,
                                 "scope": self._scope()})
        return _grant(body, refresh_token, account)

    def begin_login(self, redirect_uri: str, login_hint: str | None) -> LoginRequest:
        if not self.auth.authorization_url:
            raise _config_problem("the auth block has no authorizationUrl",
                                  "Set authorizationUrl to the provider's authorize endpoint.")
        verifier, challenge = pkce_pair()
        state = secrets.token_urlsafe(24)
        query = {"response_type": "code", "client_id": self.auth.client_id,
                 "redirect_uri": redirect_uri, "scope": self._scope(), "state": state,
                 "code_challenge": challenge, "code_challenge_method": "S256"}
        if self.auth.provider == OAuthProvider.GOOGLE:
            # Google hands out a refresh token only for offline access with consent shown.
            query.update(access_type="offline", prompt="consent")
        if login_hint:
            query["login_hint"] = login_hint
        base = str(self.auth.authorization_url)
        url = base + ("&" if "?" in base else "?") + urlencode(query)
        return LoginRequest(url, state, {"verifier": verifier, "redirect_uri": redirect_uri,
                                         "account": login_hint})

    async def _redeem(self, request: LoginRequest, response: dict[str, str]) -> Grant:
        if "code" not in response:
            raise self._fail({"error": "invalid_request"})
        body = await self._post({"grant_type": "authorization_code", "code": response["code"],
                                 "redirect_uri": request.context["redirect_uri"],
                                 "code_verifier": request.context["verifier"]})
        return _grant(body, account=request.context["account"])
