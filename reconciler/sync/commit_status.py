"""The sync outcome as a GitHub commit status (SPEC X5, issue 13 item 6).

``POST {api}/repos/{owner}/{repo}/statuses/{sha}`` with JSON ``state``
(pending | success | failure | error), ``description`` (GitHub keeps at most
140 characters: longer text is cut with an ellipsis), ``context`` and an
optional ``target_url``; ``Authorization: Bearer`` the token from its secret
reference, ``Accept: application/vnd.github+json`` and the REST API version
header. GitHub Enterprise Server works with its ``/api/v3`` base URL.

5xx, 429 and connection errors are retried with ``runtime.backoff``, waiting
at least what ``Retry-After`` asks; other 4xx (401 bad token, 404 no access,
422 invalid) are final and reported with GitHub's own message.

Functions:

- ``await post_status(target, sha, state, description, *, attempts=4,
  backoff_seconds=1.0, sleep=asyncio.sleep, transport=None) -> StatusResult``:
  never raises for an HTTP outcome (a status is a courtesy: the sync goes on);
  ``StatusResult.ok`` when GitHub answered 201. ``SecretError`` when the token
  reference cannot be resolved (an operator setting).
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import httpx

from reconciler.runtime import backoff
from reconciler.runtime.tls import tls_context
from reconciler.runtime.webhook import operator_value

API_VERSION = "2022-11-28"
MAX_DESCRIPTION = 140


class StatusState(StrEnum):
    PENDING = "pending"
    SUCCESS = "success"
    FAILURE = "failure"
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class StatusTarget:
    """Where statuses go: daemon settings, never the PR-controlled repo."""

    repository: str  # "owner/name"
    token: str  # a secret reference: env:NAME, file:PATH or enc:v1:...
    api_url: str = "https://api.github.com"
    context: str = "reconciler/sync"
    target_url: str | None = None  # where "Details" leads, e.g. the daemon's /v1/sync
    ca_file: str | None = None  # a private CA (GitHub Enterprise Server)


@dataclass(frozen=True, slots=True)
class StatusResult:
    ok: bool
    status_code: int | None  # GitHub's last answer; None when it never answered
    attempts: int
    error: str = ""  # why not, in GitHub's words when it gave any; never the token


def status_body(target: StatusTarget, state: StatusState | str, description: str
                ) -> dict[str, Any]:
    text = " ".join(description.split())
    if len(text) > MAX_DESCRIPTION:
        text = text[:MAX_DESCRIPTION - 1] + "…"
    body: dict[str, Any] = {"state": StatusState(state).value, "description": text,
                            "context": target.context}
    if target.target_url:
        body["target_url"] = target.target_url
    return body


async def post_status(target: StatusTarget, sha: str, state: StatusState | str,
                      description: str, *, attempts: int = 4, backoff_seconds: float = 1.0,
                      sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                      transport: httpx.AsyncBaseTransport | None = None) -> StatusResult:
    """Post one commit status, retrying what may pass (see the module docstring)."""
    url = f"{target.api_url.rstrip('/')}/repos/{target.repository}/statuses/{sha}"
    headers = {"Authorization": f"Bearer {operator_value(target.token)}",
               "Accept": "application/vnd.github+json", "X-GitHub-Api-Version": API_VERSION,
               "User-Agent": "reconciler-sync"}
    body = json.dumps(status_body(target, state, description)).encode()
    verify: Any = tls_context(target.ca_file) if target.ca_file else True
    async with httpx.AsyncClient(timeout=10.0, transport=transport, verify=verify,
                                 follow_redirects=False) as client:
        result = StatusResult(False, None, 0)
        for attempt in range(1, max(attempts, 1) + 1):
            result, retry_after = await _attempt(client, url, headers, body, attempt)
            if result.ok or retry_after is None or attempt == attempts:
                return result
            delay = backoff.backoff_seconds(attempt, backoff_seconds, math.inf, jitter=0.0)
            await sleep(max(delay, retry_after))
        return result


async def _attempt(client: httpx.AsyncClient, url: str, headers: dict[str, str],
                   body: bytes, attempt: int) -> tuple[StatusResult, float | None]:
    """The outcome, and how long to wait at least when it may pass on retry (else None)."""
    try:
        response = await client.post(url, content=body,
                                     headers={**headers, "Content-Type": "application/json"})
    except httpx.HTTPError as exc:  # its text may hold the URL; the type says enough
        return StatusResult(False, None, attempt, type(exc).__name__), 0.0
    code = response.status_code
    if code == 201:
        return StatusResult(True, code, attempt), None
    result = StatusResult(False, code, attempt, f"HTTP {code}: {_github_message(response)}")
    if code >= 500 or code == 429:
        wait = backoff.retry_after_seconds(response.headers.get("Retry-After"))
        return result, wait or 0.0
    return result, None


def _github_message(response: httpx.Response) -> str:
    """GitHub's ``message`` and each validation error's, e.g. 'Validation Failed: state is
    not included in the list'."""
    try:
        data = response.json()
    except ValueError:
        return response.reason_phrase or "no reason given"
    if not isinstance(data, dict):
        return response.reason_phrase
    details = [e.get("message") or f"{e.get('field')} {e.get('code')}"
               for e in data.get("errors") or () if isinstance(e, dict)]
    message = str(data.get("message") or response.reason_phrase)
    return f"{message}: {'; '.join(details)}" if details else message
