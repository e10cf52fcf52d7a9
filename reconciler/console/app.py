"""``router(deps)``: the console's routes, mounted by the daemon under ``/console``."""

from __future__ import annotations

from fastapi import APIRouter

from reconciler.console import screens
from reconciler.console.deps import ConsoleDeps


def router(deps: ConsoleDeps) -> APIRouter:
    console = APIRouter(prefix="/console", include_in_schema=False)
    # One include per screen module: console.include_router(servers.router(deps)), ...
    screens.include(console, deps)
    return console
