"""The one webhook poster: health notifications and ticket events go out through it.

A webhook URL often carries its token (chat webhooks do), so it may be a secret
reference (``env:NAME``, ``file:PATH``, ``enc:v1:...``) resolved as the operator's
own secret, and logs (ours, and httpx's request log) only show its scheme and host.
With a signing secret each POST carries ``X-Reconcile-Signature: t=<unix time>,
v1=<hex HMAC-SHA256 of "<t>.<body>">``, so the receiver can check origin and freshness.

A refusal says whether it may pass (connection error, timeout, 408, 429, 5xx, with
the receiver's ``Retry-After``) or not (other 4xx); when to try again is the
caller's: the notifier retries in memory, the sink from the store.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from reconciler.config.secrets import ENC_PREFIX, resolve_operator
from reconciler.runtime.backoff import retry_after_seconds
from reconciler.runtime.tls import tls_context

SIGNATURE_HEADER = "X-Reconcile-Signature"


def signature(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def operator_value(value: str) -> str:
    """A setting that may be a secret reference (``env:``, ``file:``, sealed) or literal."""
    return resolve_operator(value) if value.startswith(("env:", "file:", ENC_PREFIX)) else value


@dataclass(frozen=True, slots=True)
class Refusal:
    why: str  # never the URL: it may hold the token
    permanent: bool
    retry_after: float | None = None  # seconds the receiver asked us to wait


class WebhookPoster:
    """``async with`` resolves the references (SecretError) and opens one client."""

    def __init__(self, webhook: str, *, secret: str | None = None, ca_file: str | None = None,
                 timeout_seconds: float = 10.0,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._webhook_ref = webhook
        self._secret_ref = secret
        self._ca_file = ca_file
        self._timeout = timeout_seconds
        self._transport = transport
        self._url = ""
        self._secret: str | None = None
        self._client: httpx.AsyncClient | None = None

    @property
    def shown(self) -> str:
        """The URL as logs may show it."""
        return _shown(self._url)

    async def __aenter__(self) -> WebhookPoster:
        self._url = operator_value(self._webhook_ref)
        _HIDDEN.add(self._url)
        self._secret = operator_value(self._secret_ref) if self._secret_ref else None
        verify: Any = tls_context(self._ca_file) if self._ca_file else True
        self._client = httpx.AsyncClient(timeout=self._timeout, transport=self._transport,
                                         verify=verify, follow_redirects=False)
        return self

    async def __aexit__(self, *_: object) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    async def post(self, body: bytes,
                   headers: Mapping[str, str] | None = None) -> Refusal | None:
        """POST ``body`` as JSON; None when the receiver took it."""
        assert self._client is not None, "use the poster in `async with`"
        sent = {"Content-Type": "application/json", **(headers or {})}
        if self._secret:
            sent[SIGNATURE_HEADER] = signature(self._secret, int(time.time()), body)
        try:
            response = await self._client.post(self._url, content=body, headers=sent)
        except httpx.HTTPError as exc:
            # The exception text can include the URL (with its token): name the type only.
            return Refusal(type(exc).__name__, permanent=False)
        if response.is_success:
            return None
        status = response.status_code
        return Refusal(f"HTTP {status}", permanent=status < 500 and status not in (408, 429),
                       retry_after=retry_after_seconds(response.headers.get("Retry-After")))


_HIDDEN: set[str] = set()  # the webhook URLs in use: httpx logs each request's URL at INFO


def _hide_webhook_urls(record: logging.LogRecord) -> bool:
    if isinstance(record.args, tuple) and any(str(a) in _HIDDEN for a in record.args):
        record.args = tuple(_shown(str(a)) if str(a) in _HIDDEN else a for a in record.args)
    return True


logging.getLogger("httpx").addFilter(_hide_webhook_urls)


def _shown(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}/…" if parts.netloc else "webhook"
