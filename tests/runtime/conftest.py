"""Runtime tests: the notifier's tests use the health kit's servers, environment and
webhook receiver (tests/health/kit.py); SMTP peers come from tests/peers/."""

from __future__ import annotations

from health.kit import _clean_env, webhook  # noqa: F401  (fixtures: autouse env, receiver)
