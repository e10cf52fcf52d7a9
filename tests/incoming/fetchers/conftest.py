"""Fetcher tests: Dovecot comes from tests/peers/dovecot.py; each test its own mailbox."""

from __future__ import annotations

import pytest
from peers.dovecot import MailUser

from reconciler.mail.threaded import CA_FILE_ENV

from .kit import PASSWORD_ENV


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, mailbox: MailUser) -> None:
    monkeypatch.delenv(CA_FILE_ENV, raising=False)
    monkeypatch.setenv(PASSWORD_ENV, mailbox.password)
