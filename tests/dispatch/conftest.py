"""Dispatch tests: SMTP peers, certificates and the async runner come from
tests/peers/smtp_fixtures.py; here only the environment the transport reads."""

from __future__ import annotations

import pytest

from reconciler.runtime.tls import CA_FILE_ENV

from .kit import PASSWORD, PASSWORD_ENV


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CA_FILE_ENV, raising=False)
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
