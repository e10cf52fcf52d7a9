"""Health tests: SMTP peers, certificates and the async runner come from
tests/peers/smtp_fixtures.py; here the environment and a webhook receiver."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from reconciler.runtime.tls import CA_FILE_ENV

from .kit import PASSWORD, PASSWORD_ENV, WebhookReceiver


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
