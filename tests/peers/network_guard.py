"""Proof that no test contacts anything but this machine (DEVELOPERS.md, Network).

Every test runs with two guards on the socket module: a connection to an
address outside loopback fails, and so does resolving a name that is not
this machine's (a DNS query would leave the machine). The guard covers
everything in the test process, asyncio included; subprocesses started by
tests point only at 127.0.0.1 peers by construction.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterator
from typing import Any

import pytest

_LOCAL_NAMES = {"localhost", "localhost.localdomain", socket.gethostname().lower()}


class ExternalNetworkUse(AssertionError):
    pass


def _loopback_literal(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]").split("%")[0]).is_loopback
    except ValueError:
        return False


def _check_host(host: Any) -> None:
    if host is None or host == "":
        return
    name = host.decode() if isinstance(host, bytes) else str(host)
    if name.lower().rstrip(".") in _LOCAL_NAMES or _loopback_literal(name):
        return
    if name in ("0.0.0.0", "::"):  # binding to all interfaces, never a destination here
        return
    raise ExternalNetworkUse(f"a test tried to reach {name!r}; tests may only use loopback")


@pytest.fixture(autouse=True)
def _no_external_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    real_getaddrinfo = socket.getaddrinfo
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        _check_host(host)
        return real_getaddrinfo(host, *args, **kwargs)

    def connect(self: socket.socket, address: Any) -> Any:
        if self.family in (socket.AF_INET, socket.AF_INET6):
            _check_host(address[0])
        return real_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> Any:
        if self.family in (socket.AF_INET, socket.AF_INET6):
            _check_host(address[0])
        return real_connect_ex(self, address)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    yield

