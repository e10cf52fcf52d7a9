"""SMTP tests: peers, certificates and the async runner come from tests/peers/; here
only the environment the transport reads (the same as the dispatch tests')."""

from __future__ import annotations

import pytest
from dispatch.kit import PASSWORD, PASSWORD_ENV

from reconciler.runtime.tls import CA_FILE_ENV


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CA_FILE_ENV, raising=False)
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
