"""Fixtures shared by every test folder that talks to real SMTP peers, and the
runner for ``async def`` tests.

pytest-asyncio is not a dependency; ``async def`` tests run with
``asyncio.run``, one fresh event loop per test (a transport and its pools
belong to one loop).
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from peers.smtp import PeerCerts, SmtpPeer


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
    """A second CA nobody told the transport about."""
    return PeerCerts.create(tmp_path_factory.mktemp("other-ca"))


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
