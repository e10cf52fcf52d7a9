"""A console app for screen tests, signed in as a chosen principal.

``console_as(principal)`` stands in for the session layer (sign-in, CSRF) in
one place: the screens are tested against ``session``'s documented contract.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse
from fastapi.testclient import TestClient

from reconciler.console import app as console_app
from reconciler.console import session
from reconciler.console.deps import ConsoleDeps
from reconciler.console.errors import NotFound
from reconciler.runtime.access import Forbidden, Principal
from reconciler.runtime.live_config import ConfigHolder
from reconciler.runtime.metrics import DaemonMetrics
from reconciler.runtime.settings import DaemonSettings
from reconciler.state import SqlStore, open_store

CSRF = "csrf-for-tests"
Console = Callable[..., TestClient]


@pytest.fixture
def console_store(tmp_path: Path) -> Iterator[SqlStore]:
    store = open_store(tmp_path / "state.db")
    try:
        yield store  # type: ignore[misc]
    finally:
        store.close()


def build_console(store: SqlStore, principal: Principal, monkeypatch: pytest.MonkeyPatch,
                  app_state: object | None = None, **settings: object) -> FastAPI:
    deps = ConsoleDeps(store, DaemonSettings(store_url=store.location, **settings),
                       ConfigHolder(), DaemonMetrics(), app_state or SimpleNamespace())

    async def as_principal(request: Request) -> Principal:
        request.state.csrf_token = CSRF
        return principal

    async def no_csrf() -> None:
        return None

    # needs() calls signed_in directly today; the override covers a Depends() later.
    app = FastAPI()
    app.dependency_overrides[session.signed_in] = as_principal
    monkeypatch.setattr(session, "signed_in", as_principal)
    app.dependency_overrides[session.csrf_checked] = no_csrf
    app.include_router(console_app.router(deps))

    @app.exception_handler(Forbidden)
    async def forbidden(_request: Request, exc: Forbidden) -> PlainTextResponse:
        return PlainTextResponse(str(exc), status_code=403)

    @app.exception_handler(NotFound)
    async def not_found(_request: Request, exc: NotFound) -> PlainTextResponse:
        return PlainTextResponse(f"there is no {exc.what}", status_code=404)

    return app


@pytest.fixture
def console_as(console_store: SqlStore, monkeypatch: pytest.MonkeyPatch) -> Console:
    def make(principal: Principal, **kw: object) -> TestClient:
        return TestClient(build_console(console_store, principal, monkeypatch, **kw),
                          raise_server_exceptions=True)
    return make
