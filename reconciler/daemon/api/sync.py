"""Sync routes (SPEC X5): ``GET /v1/sync`` (a viewer of every namespace: it is about
the whole repository) and GitHub's push webhook ``POST /v1/sync/webhook``,
authenticated by its HMAC signature instead of a token."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from reconciler.config.secrets import resolve_operator
from reconciler.daemon.api.guard import Guard
from reconciler.daemon.api.schemas import ERRORS, Problem
from reconciler.runtime.settings import DaemonSettings
from reconciler.state.base import Store
from reconciler.sync.webhook import signature_ok

TAG = {"name": "sync", "description": "Continuous sync from git (X5)."}
_HOOK_ANSWERS: dict[int | str, dict[str, Any]] = {
    200: {"description": "A ping, or a push to another branch: nothing to do."},
    401: {"model": Problem, "description": "X-Hub-Signature-256 is missing or wrong."},
    404: {"model": Problem, "description": "This daemon has no webhook secret configured."},
    503: ERRORS[503],
}


def status_router(store: Store, guard: Guard) -> APIRouter:
    router = APIRouter(tags=["sync"], dependencies=[Depends(guard.viewer_everywhere)])

    @router.get("/v1/sync", summary="Where the continuous sync stands", responses=ERRORS)
    async def sync_status() -> dict[str, Any]:
        return (await asyncio.to_thread(store.sync.get)).to_json()

    return router


def webhook_router(store: Store, settings: DaemonSettings,
                   wake: Callable[[], Callable[[], None] | None]) -> APIRouter:
    """``wake()``: the local syncer's wake-up, when this process runs one; other daemons'
    syncers see the request in ``store.sync`` within a second."""
    router = APIRouter(tags=["sync"])
    secret = (resolve_operator(settings.sync_webhook_secret_ref)
              if settings.sync_webhook_secret_ref else None)

    @router.post("/v1/sync/webhook", summary="GitHub push webhook: sync now", status_code=202,
                 responses=_HOOK_ANSWERS)
    async def push(request: Request) -> JSONResponse:
        if secret is None:
            return JSONResponse({"detail": "no --sync-webhook-secret-ref is configured"}, 404)
        body = await request.body()
        if not signature_ok(secret, body, request.headers.get("X-Hub-Signature-256")):
            return JSONResponse({"detail": "bad or missing X-Hub-Signature-256"}, 401)
        if request.headers.get("X-GitHub-Event") == "ping":
            return JSONResponse({"pong": True}, 200)
        try:
            ref = json.loads(body).get("ref")
        except (ValueError, AttributeError):
            ref = None
        if ref not in (None, f"refs/heads/{settings.sync_branch}"):
            return JSONResponse({"accepted": False, "detail": f"not {settings.sync_branch}"},
                                200)
        await asyncio.to_thread(store.sync.update, requested_at=datetime.now(UTC),
                                override_window=False)
        if (wakes := wake()) is not None:
            wakes()
        return JSONResponse({"accepted": True}, 202)

    return router
