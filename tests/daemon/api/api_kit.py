"""The daemon API served for real: uvicorn on 127.0.0.1 and a free port, in a
thread, over a store from ``peers.postgres`` (SQLite and PostgreSQL).

Import the fixtures into a test module (``from .api_kit import api, ...``);
tests/daemon has no conftest of its own because several suites share the
folder.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from reconciler.config.desired import CanonicalResource, ResourceKey
from reconciler.daemon.api.factory import create_api
from reconciler.runtime.live_config import ConfigHolder
from reconciler.runtime.metrics import DaemonMetrics
from reconciler.runtime.settings import DaemonSettings
from reconciler.state import Action, Change, RevisionMeta, SqlStore

TOKEN_ENV = "RECONCILE_TEST_API_TOKEN"
TOKEN = "api-test-token-7Qz3vK9mXr2Lp8Wd"
OTHER_TOKEN_ENV = "RECONCILE_TEST_API_TOKEN_2"
OTHER_TOKEN = "second-api-token-Hn4Jc6Tb1Ye5"
NAMESPACES = ("default", "acme")
WORKER_ID = "api-test-worker"
START_TIMEOUT_S = 120.0  # a deadline for a failing start, generous for a busy machine


def auth(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def notification(i: int = 0, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "module": "requests",
        "context": {"department": "IT", "site": "Berlin"},
        "to": [f"Requester {i} <requester{i}@example.com>"],
        "cc": [{"email": "lead@example.com", "name": "Desk Lead"}],
        "subject": f"[Request ##RE-{i}##] updated",
        "textBody": "Your request was updated.\n",
        "htmlBody": "<p>Your request was updated.</p>",
    }
    body.update(fields)
    return body


def _server(namespace: str, name: str) -> Change:
    spec = {"email": f"{name}@desk.example", "replyTo": "support@desk.example",
            "host": "smtp.desk.example", "port": 587, "security": "starttls", "primary": True}
    resource = CanonicalResource.build(ResourceKey("OutgoingServer", namespace, name),
                                       "reconciler.dev/v1", spec, None)
    return Change(Action.CREATE, resource.key, None, resource)


def live_config(store: SqlStore, namespaces: tuple[str, ...] = NAMESPACES) -> ConfigHolder:
    """Apply one primary server per namespace and load it, as the daemon would."""
    if namespaces:
        store.commit([_server(ns, f"{ns}-main") for ns in namespaces],
                     RevisionMeta(actor="api-test"), base_revision=store.head())
    holder = ConfigHolder()
    holder.refresh(store)
    return holder


@contextmanager
def serve(app: FastAPI) -> Iterator[str]:
    """Run ``app`` with uvicorn in a thread; yield its base URL."""
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on connections of a
    # listener whose proto says TCP; without it Nagle and delayed ACKs add ~40 ms.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    # log_config=None: uvicorn's loggers propagate to the root logger, where
    # caplog sees them (the token test reads every record).
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]},
                              name=f"uvicorn-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + START_TIMEOUT_S
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            sock.close()
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(START_TIMEOUT_S)
        sock.close()


@dataclass
class ServedApi:
    url: str
    app: FastAPI
    store: SqlStore
    store_url: str
    metrics: DaemonMetrics
    config: ConfigHolder

    def client(self, token: str | None = TOKEN, **kw: Any) -> httpx.Client:
        headers = auth(token) if token is not None else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30.0, **kw)


def settings_for(store_url: str, *tokens: str) -> DaemonSettings:
    return DaemonSettings(store_url=store_url, api_tokens=tokens or (f"env:{TOKEN_ENV}",),
                          worker_id=WORKER_ID)


ServeApi = Callable[..., ServedApi]


@pytest.fixture
def serve_api(
    store: SqlStore, store_url: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[ServeApi]:
    """Start an API over ``store`` with create_api keyword options; stopped after the test."""
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    monkeypatch.setenv(OTHER_TOKEN_ENV, OTHER_TOKEN)
    stack: list[Any] = []

    def start(*, config: ConfigHolder | None = None, api_store: Any = None,
              tokens: tuple[str, ...] = (), **options: Any) -> ServedApi:
        holder = config if config is not None else live_config(store)
        metrics = DaemonMetrics()
        app = create_api(api_store if api_store is not None else store,
                         settings_for(store_url, *tokens), metrics, holder, **options)
        running = serve(app)
        url = running.__enter__()
        stack.append(running)
        return ServedApi(url, app, store, store_url, metrics, holder)

    try:
        yield start
    finally:
        for running in reversed(stack):
            running.__exit__(None, None, None)


@pytest.fixture
def api(serve_api: ServeApi) -> ServedApi:
    """The API with default options over a store configured for NAMESPACES."""
    return serve_api()
