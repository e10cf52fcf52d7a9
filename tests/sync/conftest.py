"""Sync tests use the health kit's environment and webhook receiver (tests/health/kit.py);
git, SMTP and GitHub peers come from tests/peers/."""

from __future__ import annotations

from health.kit import _clean_env, webhook  # noqa: F401  (fixtures: autouse env, receiver)
