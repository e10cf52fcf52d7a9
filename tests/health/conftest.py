"""Fixtures for health tests: real SMTP peers (aiosmtpd, smtp-sink), certificates,
a webhook receiver, and ``async def`` tests run with ``asyncio.run`` (one loop per
test, as in tests/dispatch; pytest-asyncio is not a dependency)."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from peers.smtp import PeerCerts, SmtpPeer

from reconciler.dispatch.transports.smtp import CA_FILE_ENV

from .kit import PASSWORD, PASSWORD_ENV, WebhookReceiver


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    if not inspect.iscoroutinefunction(pyfuncitem.obj):
        return None
    names = pyfuncitem._fixtureinfo.argnames
    asyncio.run(pyfuncitem.obj(**{n: pyfuncitem.funcargs[n] for n in names}))
    return True


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> PeerCerts:
    return PeerCerts.create(tmp_path_factory.mktemp("ca"))


@pytest.fixture(scope="session")
def stranger_certs(tmp_path_factory: pytest.TempPathFactory) -> PeerCerts:
    """A CA nobody trusts."""
    return PeerCerts.create(tmp_path_factory.mktemp("other-ca"))


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CA_FILE_ENV, raising=False)
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)


@pytest.fixture
def peer_factory(certs: PeerCerts) -> Iterator[Callable[..., SmtpPeer]]:
    started: list[SmtpPeer] = []

    def make(mode: str = "plain", **kwargs: Any) -> SmtpPeer:
        kwargs.setdefault("certs", certs)
        peer = SmtpPeer(mode, **kwargs).start()  # type: ignore[arg-type]
        started.append(peer)
        return peer

    yield make
    for peer in started:
        peer.stop()


@pytest.fixture
def webhook() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver().start()
    try:
        yield receiver
    finally:
        receiver.stop()
