"""Health tests: SMTP peers, certificates and the async runner come from
tests/peers/smtp_fixtures.py; the environment and the webhook receiver from kit.py."""

from __future__ import annotations

from .kit import _clean_env, webhook  # noqa: F401  (fixtures: autouse env, receiver)
