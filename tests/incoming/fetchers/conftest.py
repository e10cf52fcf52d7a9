"""Fetcher tests: Dovecot comes from tests/peers/dovecot.py; each test its own mailbox."""

from __future__ import annotations

from mail.fetch_kit import fetch_env  # noqa: F401  (autouse: password env, no CA env)
