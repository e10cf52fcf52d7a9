"""The loopback-only guard of tests/peers/network_guard.py really refuses."""

from __future__ import annotations

import socket

import pytest
from peers.network_guard import ExternalNetworkUse


def test_the_guard_refuses_a_public_name() -> None:
    with pytest.raises(ExternalNetworkUse):
        socket.getaddrinfo("example.com", 25)


def test_the_guard_refuses_a_non_loopback_address() -> None:
    sock = socket.socket()
    try:
        with pytest.raises(ExternalNetworkUse):
            sock.connect(("192.0.2.1", 25))  # TEST-NET-1: refused before any packet
    finally:
        sock.close()
