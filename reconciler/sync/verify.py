"""Verify an automatic apply and roll it back by itself (SPEC X5, issue 13 item 5).

Before an automatic apply the loop notes which of the servers it is about to
change work now; after it, each of those is probed again, round after round,
for the configured window. One that stays Unreachable for ``failures`` rounds
in a row is broken by the apply: the apply is undone as a ``rollback`` revision
that names the cause and the failing probe step, and the loop marks the commit
Degraded and does not apply it again until a newer commit arrives.

The probes are the existing connection checks: ``health.probes.probe_server``
(the protocol's steps from ``mail.registry``) for outgoing servers, and the
protocol's fetcher login (``mail.registry.fetcher_for``) for incoming ones.

Functions (plain data in and out; the loop passes its SyncPolicy's values):

- ``await reachable_before(changes, options=None) -> frozenset[ResourceKey]``:
  the changed, enabled servers that work with their pre-apply spec.
- ``await verify_apply(store, applied, before, settings, *, actor, options=None,
  lock_timeout=30.0) -> VerifyResult``: probe, and roll back when one broke;
  ``result.degraded`` tells the loop to mark ``applied.meta.git_commit``.
- ``roll_back(store, applied, cause, actor, *, lock_timeout=30.0) -> Revision``:
  write back, as kind ``rollback``, every resource ``applied`` changed as git
  wrote it before (the previous revision's config; later revisions to other
  resources stay). ``lock_timeout=None`` when the caller holds the store lock.

Why git's previous version and not the live one right before the apply: an
out-of-band edit in between was never bound to its credentials (SPEC S2), and
a rollback, like an apply, binds what it writes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from reconciler.config.desired import CanonicalResource, DesiredState, ResourceKey
from reconciler.config.models.incoming_server import IncomingServer
from reconciler.config.models.outgoing_server import OutgoingServer
from reconciler.health.probes import probe_server, supports
from reconciler.mail.failure import MailFailure
from reconciler.mail.probe_options import DEFAULT_PROBE_TIMEOUT, ProbeOptions
from reconciler.mail.registry import fetcher_for
from reconciler.plan.diff import diff
from reconciler.runtime.namespace import resource_from_canonical
from reconciler.state import (
    Change,
    HistoryFilter,
    LiveState,
    Revision,
    RevisionKind,
    RevisionMeta,
    Store,
)
from reconciler.sync.drift import GIT_WRITTEN

SERVER_KINDS = ("OutgoingServer", "IncomingServer")


@dataclass(frozen=True, slots=True)
class VerifySettings:
    window_seconds: float = 120.0  # how long after the apply servers are watched
    interval_seconds: float = 10.0  # between probe rounds
    failures: int = 3  # Unreachable rounds in a row that count as broken


@dataclass(frozen=True, slots=True)
class Broken:
    key: ResourceKey
    step: str  # the failing probe step, e.g. "tcp"
    error: str  # "step: detail" as health records keep it (already redacted)


@dataclass(frozen=True)
class VerifyResult:
    checked: tuple[ResourceKey, ...]
    broken: tuple[Broken, ...] = ()
    rollback: Revision | None = None

    @property
    def degraded(self) -> bool:
        return bool(self.broken)

    @property
    def cause(self) -> str:
        return "; ".join(f"{b.key} unreachable after the apply: {b.error}" for b in self.broken)


async def reachable_before(changes: Iterable[Change],
                           options: ProbeOptions | None = None) -> frozenset[ResourceKey]:
    servers = [c.before for c in changes if c.before is not None and c.after is not None
               and c.key.kind in SERVER_KINDS]
    results = await asyncio.gather(*(_probe(r, options or ProbeOptions()) for r in servers))
    return frozenset(r.key for r, failed in zip(servers, results, strict=True) if not failed)


async def verify_apply(store: Store, applied: Revision, before: Iterable[ResourceKey],
                       settings: VerifySettings, *, actor: str,
                       options: ProbeOptions | None = None,
                       lock_timeout: float | None = 30.0) -> VerifyResult:
    """Probe the servers ``applied`` changed that worked before; roll back if one broke."""
    worked = set(before)
    watched = [c.after for c in applied.changes if c.after is not None and c.key in worked]
    broken = await _watch(watched, settings, options or ProbeOptions())
    result = VerifyResult(tuple(r.key for r in watched), broken)
    if not broken:
        return result
    rev = await asyncio.to_thread(roll_back, store, applied, result.cause, actor,
                                  lock_timeout=lock_timeout)
    return VerifyResult(result.checked, broken, rev)


async def _watch(servers: Sequence[CanonicalResource], settings: VerifySettings,
                 options: ProbeOptions) -> tuple[Broken, ...]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + settings.window_seconds
    streak: dict[ResourceKey, int] = {}
    broken: dict[ResourceKey, Broken] = {}
    while servers:
        pending = [r for r in servers if r.key not in broken]
        for res, failed in zip(pending, await asyncio.gather(
                *(_probe(r, options) for r in pending)), strict=True):
            streak[res.key] = streak.get(res.key, 0) + 1 if failed else 0
            if failed and streak[res.key] >= settings.failures:
                broken[res.key] = failed
        if len(broken) == len(servers) or loop.time() + settings.interval_seconds > deadline:
            break
        await asyncio.sleep(settings.interval_seconds)
    return tuple(broken[r.key] for r in servers if r.key in broken)


async def _probe(resource: CanonicalResource, options: ProbeOptions) -> Broken | None:
    """None when the server works (or cannot be checked: nothing to compare)."""
    try:
        server = resource_from_canonical(resource)
    except (ValidationError, ValueError):
        return None
    if not getattr(server.spec, "enabled", True):
        return None  # switched off on purpose: not a breakage
    if isinstance(server, OutgoingServer):
        if not supports(server):
            return None
        report = await probe_server(server, options=options)
        failed = report.failed
        if report.ok or failed is None:
            return None
        return Broken(resource.key, str(failed.step), report.error or str(failed.step))
    if isinstance(server, IncomingServer):
        return await _login(resource.key, server, options)
    return None


async def _login(key: ResourceKey, server: IncomingServer,
                 options: ProbeOptions) -> Broken | None:
    """An incoming server's check: the fetcher's own connect and login."""
    fetcher = fetcher_for(server, token_provider=options.token_provider,
                          ca_file=options.ca_file,
                          timeout=options.timeout or DEFAULT_PROBE_TIMEOUT)
    try:
        async with fetcher:  # connects and logs in
            pass
    except MailFailure as exc:
        return Broken(key, str(exc.step), f"{exc.step}: {exc.message}")
    return None


def roll_back(store: Store, applied: Revision, cause: str, actor: str, *,
              lock_timeout: float | None = 30.0) -> Revision:
    """Undo ``applied``: its resources as they were right before it, as one revision."""
    held: Any = (store.lock(actor, "sync rollback", timeout=lock_timeout)
                 if lock_timeout is not None else nullcontext())
    with held:
        keys = {c.key for c in applied.changes}
        earlier = store.snapshot(_git_before(store, applied.number)).resources
        live = store.snapshot()
        current = LiveState(live.lineage, live.revision,
                            {k: r for k, r in live.resources.items() if k in keys})
        wanted = DesiredState.of(r for k, r in earlier.items() if k in keys)
        changes = diff(wanted, current, prune=True).changes
        commit = applied.meta.git_commit
        what = f"revision {applied.number}" + (f" (commit {commit})" if commit else "")
        meta = RevisionMeta(actor=actor, message=f"rollback of {what}: {cause}",
                            git_commit=commit, git_branch=applied.meta.git_branch,
                            kind=RevisionKind.ROLLBACK)
        return store.commit(changes, meta, base_revision=live.revision)


def _git_before(store: Store, number: int) -> int:
    """The newest revision before ``number`` that git wrote (0: none)."""
    limit = 4
    while True:
        revs = store.revisions(HistoryFilter(kinds=GIT_WRITTEN, limit=limit))
        older = [r.number for r in revs if r.number < number]
        if older or len(revs) < limit:
            return older[0] if older else 0
        limit *= 4
