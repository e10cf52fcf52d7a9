"""EWS tests: the EWS peer, certificates and the async runner come from tests/peers/;
here only the environment the transport, the probe and the fetcher read (the secret
references of the dispatch and health kits; the fetcher tests set their own)."""

from __future__ import annotations

import pytest
from dispatch import kit as dispatch_kit
from health import kit as health_kit

from reconciler.runtime.tls import CA_FILE_ENV


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CA_FILE_ENV, raising=False)
    monkeypatch.setenv(dispatch_kit.PASSWORD_ENV, dispatch_kit.PASSWORD)
    monkeypatch.setenv(health_kit.PASSWORD_ENV, health_kit.PASSWORD)
