"""Shared test set-up. Peers (real servers the tests talk to) live in tests/peers/."""

from collections.abc import Iterator

import pytest

from reconciler.credentials import gate

pytest_plugins = [
    "peers.postgres",
    "peers.smtp_sink",
    "peers.smtp_fixtures",
    "peers.oauth_server",
    "peers.dovecot",
    "peers.network_guard",
    "peers.pproxy_peer",
    "peers.dns_peer",
    "peers.git_repo",
]


class _AnyEndpoint(gate.Bindings):
    """Stands in for a store's bindings in tests that build a transport, probe, fetcher or
    token provider by hand, without a store: they test those parts, not S2. Anything that
    loads a store (an in-process daemon, a CLI command) replaces it with the store's real
    bindings, which is what the S2 tests (tests/credentials/) rely on."""

    def allows(self, credential: str, endpoint: str) -> bool:
        return True


@pytest.fixture(autouse=True)
def _credential_bindings() -> Iterator[None]:
    gate.install(_AnyEndpoint(frozenset()))
    yield
    gate.install(None)
