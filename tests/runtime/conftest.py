"""Runtime tests: the notifier's tests use the health kit's servers, environment and
webhook receiver (tests/health/kit.py); SMTP peers come from tests/peers/."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from health.kit import PASSWORD, PASSWORD_ENV, WebhookReceiver

from reconciler.runtime.tls import CA_FILE_ENV


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CA_FILE_ENV, raising=False)
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)


@pytest.fixture
def webhook() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver().start()
    try:
        yield receiver
    finally:
        receiver.stop()
