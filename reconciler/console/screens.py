"""The read-mostly screens (SPEC X6): Email audit, View History, Sync & drift, Incoming."""

from __future__ import annotations

from fastapi import APIRouter

from reconciler.console import audit, history, incoming, sync
from reconciler.console.deps import ConsoleDeps


def include(console: APIRouter, deps: ConsoleDeps) -> None:
    for screen in (audit, history, sync, incoming):
        console.include_router(screen.router(deps))
