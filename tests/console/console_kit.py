"""The console over a real store (SQLite or PostgreSQL), in-process (Starlette's TestClient drives
the ASGI app; the OIDC tests serve it with uvicorn instead).

``console_app`` mounts the console on a bare FastAPI app with a token table: a
stand-in for the API tokens' ``identify(presented) -> Principal | None`` (moving
to runtime/api_tokens.py with the access file), so the tests can sign in as
principals with any roles and namespaces; ``signed_in`` is a browser signed in
that way (a real session cookie). ``daemon_app`` is the daemon's real
``create_api`` with the console switched on, signing in with a real API token.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from reconciler.config.desired import CanonicalResource, ResourceKey
from reconciler.console.app import mount
from reconciler.console.deps import ConsoleDeps
from reconciler.daemon.api.factory import create_api
from reconciler.runtime.access import Principal
from reconciler.runtime.live_config import ConfigHolder
from reconciler.runtime.metrics import DaemonMetrics
from reconciler.runtime.settings import DaemonSettings
from reconciler.state import Action, Change, RevisionMeta, SqlStore, open_store

NAMESPACES = ("default", "acme")
TOKEN_ENV = "RECONCILE_TEST_CONSOLE_TOKEN"


@dataclass
class TokenTable:
    """Generated tokens -> principals."""

    principals: dict[str, Principal] = field(default_factory=dict)

    def add(self, principal: Principal) -> str:
        token = secrets.token_hex(16)
        self.principals[token] = principal
        return token

    def identify(self, presented: str) -> Principal | None:
        return self.principals.get(presented)

    def knows(self, principal: Principal) -> bool:
        return principal in self.principals.values()


def outgoing(namespace: str, name: str, **spec: Any) -> Change:
    body = {"email": f"{name}@desk.example", "host": "smtp.desk.example", "port": 587,
            "security": "starttls", "primary": True, **spec}
    resource = CanonicalResource.build(ResourceKey("OutgoingServer", namespace, name),
                                       "reconciler.dev/v1", body, None)
    return Change(Action.CREATE, resource.key, None, resource)


def applied_store(location: str | os.PathLike[str]) -> Iterator[SqlStore]:
    """A store with one primary server per namespace, applied (the ``store`` fixture;
    a few tests that break the SQLite file on purpose pass a file path)."""
    with open_store(location) as opened:
        opened.commit([outgoing(ns, f"{ns}-main") for ns in NAMESPACES],
                      RevisionMeta(actor="console-test"), base_revision=0)
        yield opened  # type: ignore[misc]


def settings_for(store: SqlStore, **fields: Any) -> DaemonSettings:
    return DaemonSettings(store_url=store.location, console=True, **fields)


def console_app(store: SqlStore, tokens: TokenTable, **settings: Any) -> FastAPI:
    holder = ConfigHolder()
    holder.refresh(store)
    app = FastAPI()
    mount(app, ConsoleDeps(store, settings_for(store, **settings), holder, DaemonMetrics(),
                           app.state), tokens)
    return app


def daemon_app(store: SqlStore, monkeypatch: pytest.MonkeyPatch) -> tuple[FastAPI, str]:
    token = secrets.token_hex(16)
    monkeypatch.setenv(TOKEN_ENV, token)
    holder = ConfigHolder()
    holder.refresh(store)
    app = create_api(store, settings_for(store, api_tokens=(f"env:{TOKEN_ENV}",)),
                     DaemonMetrics(), holder)
    return app, token


def client(app: FastAPI) -> TestClient:
    return TestClient(app, follow_redirects=False, raise_server_exceptions=False)


CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_of(html: str) -> str:
    found = CSRF.search(html)
    assert found, "the page has no form with a CSRF token"
    return found.group(1)


def sign_in(browser: TestClient, token: str, next_path: str = "/console/") -> Any:
    form = browser.get("/console/signin")
    return browser.post("/console/signin", data={"csrf_token": csrf_of(form.text),
                                                 "token": token, "next": next_path})


def signed_in(store: SqlStore, principal: Principal, *,
              app_state: Mapping[str, Any] | None = None, **settings: Any) -> TestClient:
    """A browser signed in as ``principal`` through the sign-in form. ``app_state``:
    what the daemon would put on ``app.state`` (``sync_wake``, ``wake_worker``)."""
    tokens = TokenTable()
    app = console_app(store, tokens, **settings)
    for name, value in (app_state or {}).items():
        setattr(app.state, name, value)
    browser = client(app)
    done = sign_in(browser, tokens.add(principal))
    assert done.status_code == 303, done.text
    return browser


def csrf_for(browser: TestClient) -> str:
    """The signed-in session's CSRF token, as its pages carry it (the sign-out form)."""
    return csrf_of(browser.get("/console/").text)
