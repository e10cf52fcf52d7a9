"""GitHub's push webhook (SPEC X5): ``X-Hub-Signature-256`` is ``sha256=`` and the hex
HMAC-SHA256 of the raw body under the webhook's secret."""

from __future__ import annotations

import hashlib
import hmac


def signature_ok(secret: str, body: bytes, header: str | None) -> bool:
    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected.encode(), (header or "").encode())
