"""Graph tests: the local Graph is tests/peers/graph_server.py; certificates and the async
runner come from tests/peers/smtp_fixtures.py. Here only the environment the client reads:
no extra CA bundle, so a test's own ``ca_file`` decides what is trusted."""

from __future__ import annotations

import pytest

from reconciler.runtime.tls import CA_FILE_ENV


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CA_FILE_ENV, raising=False)
