"""The sync loop (SPEC X5): follow git and keep the live store converged with it.

One daemon among those sharing a store syncs (``store.leases`` role ``sync``).
Every interval, at once after a signed push webhook or `reconcile sync now`:

1. fetch the branch; a commit already handled (Synced, Failed, Degraded) is
   not planned again, only drift is checked;
2. validate the commit's folder like `reconcile validate`: errors (policy
   denials included) stop the sync in Failed with their file:line; the plan
   cache re-reads only the files the commit changed (``sync.commit_check``);
3. drift since the last git-written revision, checked whenever no commit is
   being applied (an apply puts git's version back anyway): ``selfHeal`` warn
   reports it, heal writes git's version back (``sync.drift``);
4. plan and apply under the store lock with :func:`plan.folder.apply_folder`,
   exactly as `reconcile apply DIR --yes`, against the live state kept
   between syncs (``sync.live``): the safety threshold and credential
   moves refuse (Failed, never approved here); before applying, the SyncPolicy
   of what changes decides: mode plan/off holds (OutOfSync), a closed window
   holds until it opens (``next attempt``);
5. verify the changed servers; one that broke rolls the apply back and marks
   the commit Degraded until a newer commit arrives.

State lives in ``store.sync`` so every daemon and `reconcile sync status` see
the same; each outcome is notified and, when configured, posted as a GitHub
commit status.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from reconciler.config.models.sync_policy import SelfHeal, SyncMode
from reconciler.plan.folder import apply_folder
from reconciler.plan.model import Plan
from reconciler.policy.validate import ValidationResult
from reconciler.runtime.metrics import DaemonMetrics
from reconciler.runtime.notifier import Notifier
from reconciler.runtime.settings import DaemonSettings
from reconciler.state import Revision, RevisionMeta, Store, StoreError
from reconciler.state.contract import SyncPhase, SyncRecord
from reconciler.sync import drift, notify
from reconciler.sync.commit_check import CommitChecker, sync_policies
from reconciler.sync.commit_status import StatusState, StatusTarget, post_status
from reconciler.sync.live import LiveCache
from reconciler.sync.scope import Decision, Scopes
from reconciler.sync.source import Commit, GitError, GitSource
from reconciler.sync.verify import reachable_before, verify_apply
from reconciler.sync.windows import window_verdict

log = logging.getLogger(__name__)

ACTOR = "reconcile-sync"
ROLE = "sync"
LOCK_TIMEOUT_S = 120.0  # as `reconcile apply`: queued behind a person's apply
REQUEST_POLL_S = 1.0  # how often a waiting leader looks for `sync now` / a webhook elsewhere
MAX_ERRORS_SHOWN = 20
_FINAL = (SyncPhase.SYNCED, SyncPhase.FAILED, SyncPhase.DEGRADED)
_STATUS = {SyncPhase.SYNCED: StatusState.SUCCESS, SyncPhase.FAILED: StatusState.FAILURE,
           SyncPhase.DEGRADED: StatusState.FAILURE}


class Held(Exception):
    """The SyncPolicy holds this commit; nothing was applied."""

    def __init__(self, reason: str, next_attempt: datetime | None = None) -> None:
        super().__init__(reason)
        self.next_attempt = next_attempt


class _Prune(Exception):
    """Plan again with deletions: every scope losing resources prunes."""


@dataclass
class _Run:
    """One sync of one commit, as the gate under the lock sees it."""

    commit: Commit
    scopes: Scopes
    override_window: bool
    decision: Decision | None = None
    before: frozenset[Any] = frozenset()


def error_lines(result: ValidationResult, folder: str = ".") -> str:
    """The errors as ``file:line:col field: message``, files named from the repository root."""
    errors = result.diagnostics.errors
    prefix = "" if folder in ("", ".") else folder.rstrip("/") + "/"
    lines = [f"{prefix}{d.location} {d.path}: {d.message}".replace(" : ", ": ")
             for d in errors[:MAX_ERRORS_SHOWN]]
    more = len(errors) - len(lines)
    return "\n".join(lines + [f"... and {more} more"] * (more > 0))


class Syncer:
    def __init__(self, store: Store, settings: DaemonSettings, *, metrics: DaemonMetrics,
                 notifier: Notifier | None = None,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        assert settings.sync_repo, "the syncer needs --sync-repo"
        self.store, self.settings, self.metrics = store, settings, metrics
        self.notifier, self.clock = notifier, clock
        self.source = GitSource(settings.sync_repo, Path(settings.sync_cache_dir),
                                branch=settings.sync_branch, path=settings.sync_path,
                                token_ref=settings.sync_token_ref,
                                ssh_key_ref=settings.sync_ssh_key_ref)
        self._wake = asyncio.Event()
        self._seen_request: datetime | None = None
        self._done: str | None = None  # the commit whose sync ended final in this process
        self._pending: str | None = None  # posted as pending, its outcome not yet
        self._scopes = Scopes(())
        self._checker = CommitChecker(Path(settings.sync_cache_dir) / "validation")
        self._live = LiveCache()
        self._drifted: tuple[str, ...] = ()

    def wake(self) -> None:
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        leader = self.store.leases.leader(ROLE)
        try:
            while not stop.is_set():
                if await asyncio.to_thread(leader.acquire):
                    try:
                        await self.sync_once()
                    except StoreError as exc:
                        log.error("sync: the store failed: %s", exc)
                    except Exception:
                        log.exception("sync run failed; trying again next interval")
                await self._pause(stop)
        finally:
            await asyncio.to_thread(leader.release)

    async def _pause(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.sync_interval_seconds
        while not stop.is_set() and (left := deadline - loop.time()) > 0:
            if self._wake.is_set():
                break
            try:
                rec = await asyncio.to_thread(self.store.sync.get)
                if rec.requested_at is not None and rec.requested_at != self._seen_request:
                    return
            except StoreError as exc:
                log.warning("sync: cannot read the sync state: %s", exc)
            waiters = [asyncio.ensure_future(e.wait()) for e in (self._wake, stop)]
            await asyncio.wait(waiters, timeout=min(REQUEST_POLL_S, left),
                               return_when=asyncio.FIRST_COMPLETED)
            for waiter in waiters:
                waiter.cancel()
        self._wake.clear()

    # -- one run ---------------------------------------------------------------------

    async def sync_once(self) -> SyncRecord:
        self._wake.clear()  # a wake-up that arrives from here on is for a later commit
        rec = await asyncio.to_thread(self.store.sync.get)
        forced = rec.requested_at is not None and rec.requested_at != self._seen_request
        self._seen_request = rec.requested_at
        if rec.phase is SyncPhase.SUSPENDED or rec.suspended_by is not None:
            return rec
        try:
            sha = await asyncio.to_thread(self.source.fetch)
        except GitError as exc:
            return await self._finish(rec.last_fetched or "", SyncPhase.FAILED, str(exc))
        rec = await self._set(source=self.source.shown, last_fetched=sha)
        if sha == rec.degraded_commit or (sha == self._done and not forced):
            await self._drift(sha)
            return await asyncio.to_thread(self.store.sync.get)
        return await self._sync_commit(sha, override=forced and rec.override_window)

    async def _sync_commit(self, sha: str, *, override: bool) -> SyncRecord:
        if sha != self._pending:  # once: a commit held and retried stays pending
            self._pending = sha
            await self._post_status(sha, StatusState.PENDING, f"syncing {sha[:12]}")
        try:
            commit = await asyncio.to_thread(self.source.checkout, sha)
        except GitError as exc:
            return await self._finish(sha, SyncPhase.FAILED, str(exc))
        result = await asyncio.to_thread(self._checker.validate, commit.tree)
        if not result.ok:
            self._done = sha
            return await self._finish(sha, SyncPhase.FAILED,
                                      f"commit {sha[:12]} is not valid:\n"
                                      f"{error_lines(result, self.settings.sync_path)}")
        self._scopes = Scopes(await asyncio.to_thread(sync_policies, result, commit.tree))
        run = _Run(commit, self._scopes, override)
        try:
            # No drift check first: applying the commit puts git's version back anyway.
            rev = await self._apply(run, result)
        except Held as held:
            await self._drift(sha)
            if held.next_attempt is None:  # mode plan/off: waits for a newer commit
                self._done = sha
            return await self._finish(sha, SyncPhase.OUT_OF_SYNC, str(held),
                                      next_attempt_at=held.next_attempt)
        except StoreError as exc:  # threshold, credential moves, lock: never approved here
            self._done = sha
            return await self._finish(sha, SyncPhase.FAILED, str(exc))
        self._done = sha
        if rev is None:
            return await self._finish(sha, SyncPhase.SYNCED, "nothing to change",
                                      last_applied=sha, quiet=True)
        return await self._verified(run, rev)

    async def _apply(self, run: _Run, result: ValidationResult) -> Revision | None:
        loop = asyncio.get_running_loop()
        commit = run.commit
        subject = commit.message.splitlines()[0] if commit.message else ""
        meta = RevisionMeta(actor=ACTOR, message=f"sync of {commit.sha[:12]} by "
                            f"{commit.author}: {subject}", git_commit=commit.sha,
                            git_branch=self.settings.sync_branch)

        def gate(plan: Plan) -> None:  # in a thread, under the apply lock
            if not plan.has_changes:
                return
            if plan.unmanaged and not plan.prune and run.scopes.prunes(plan.unmanaged):
                raise _Prune
            run.decision = decision = run.scopes.decide(c.key for c in plan.changes)
            if decision.mode is not SyncMode.APPLY:
                raise Held(f"{len(plan.changes)} change(s) wait for `reconcile apply`: mode "
                           f"{decision.mode} ({decision.held_by})")
            verdict = window_verdict(decision.windows, self.clock())
            if not verdict.open and not run.override_window:
                raise Held(f"held by a sync window: {verdict.reason}", verdict.next_open)
            self.store.sync.update(phase=SyncPhase.PROGRESSING, reason="applying")
            if decision.verify is not None:
                run.before = asyncio.run_coroutine_threadsafe(
                    reachable_before(plan.changes), loop).result()

        def attempt(prune: bool) -> Revision | None:
            return apply_folder(self.store, commit.tree, result, meta, prune=prune,
                                lock_timeout=LOCK_TIMEOUT_S, show=gate,
                                live=self._live.snapshot)[1]

        try:
            rev = await asyncio.to_thread(attempt, False)
        except _Prune:
            rev = await asyncio.to_thread(attempt, True)
        if rev is not None:
            self._live.applied(rev)
        return rev

    async def _verified(self, run: _Run, rev: Revision) -> SyncRecord:
        sha = run.commit.sha
        verify = run.decision.verify if run.decision is not None else None
        if verify is not None and run.before:
            await self._set(phase=SyncPhase.PROGRESSING, reason="verifying changed servers")
            checked = await verify_apply(self.store, rev, run.before, verify, actor=ACTOR)
            if checked.degraded:
                return await self._finish(
                    sha, SyncPhase.DEGRADED, checked.cause, degraded_commit=sha,
                    event=notify.ROLLED_BACK, revision=checked.rollback,
                    failed_step=checked.broken[0].step)
        return await self._finish(sha, SyncPhase.SYNCED, f"applied as revision {rev.number}",
                                  last_applied=sha, revision=rev)

    async def _drift(self, sha: str) -> None:
        report = await asyncio.to_thread(drift.find_drift, self.store)
        self.metrics.sync_drift.set(len(report.items))
        keys = [i.change.key for i in report.items]
        how = self._scopes.self_heal(keys)
        shown = tuple(sorted(str(k) for k in keys))
        if how is SelfHeal.HEAL:
            healed = await asyncio.to_thread(drift.heal, self.store, ACTOR, git_commit=sha,
                                             lock_timeout=LOCK_TIMEOUT_S)
            self.metrics.sync_drift.set(0)
            await self._notify(sha, notify.DRIFT, f"healed: {report.summary()}", keys,
                               healed.revision)
        elif how is SelfHeal.WARN and shown != self._drifted:
            await self._notify(sha, notify.DRIFT, report.summary(), keys, None)
        self._drifted = shown if how is SelfHeal.WARN else ()

    # -- state, notifications, commit statuses -------------------------------------

    async def _set(self, **fields: Any) -> SyncRecord:
        rec = await asyncio.to_thread(self.store.sync.update, **fields)
        for phase in SyncPhase:
            self.metrics.sync_state.labels(phase.value).set(int(phase is rec.phase))
        return rec

    async def _finish(self, sha: str, phase: SyncPhase, reason: str, *, quiet: bool = False,
                      event: str | None = None, revision: Revision | None = None,
                      failed_step: str | None = None, **fields: Any) -> SyncRecord:
        before = await asyncio.to_thread(self.store.sync.get)
        rec = await self._set(phase=phase, reason=reason, next_attempt_at=fields.pop(
            "next_attempt_at", None), **fields)
        self.metrics.sync_outcomes.labels(phase.value).inc()
        changed = (before.phase, before.reason, before.last_fetched) != (phase, reason, sha)
        log.log(logging.WARNING if phase in (SyncPhase.FAILED, SyncPhase.DEGRADED)
                else logging.INFO, "sync of %s: %s: %s", sha[:12], phase.value, reason)
        event = event or {SyncPhase.SYNCED: notify.SUCCEEDED, SyncPhase.FAILED: notify.FAILED,
                          SyncPhase.DEGRADED: notify.DEGRADED}.get(phase)
        if changed and not quiet and event is not None and sha:
            keys = [c.key for c in revision.changes] if revision is not None else []
            await self._notify(sha, event, reason, keys, revision, failed_step)
        # the commit posted as pending always gets its outcome, even one the state had
        if sha and phase in _FINAL and (changed or sha == self._pending):
            self._pending = None
            await self._post_status(sha, _STATUS[phase], reason)
        return rec

    async def _notify(self, sha: str, event: str, reason: str, keys: list[Any],
                      revision: Revision | None, failed_step: str | None = None) -> None:
        if self.notifier is None:
            return
        await notify.notify_sync(self.notifier, notify.SyncOutcome(
            event, sha, reason, namespaces=sorted({k.namespace for k in keys}),
            revision=revision.number if revision is not None else None,
            failed_step=failed_step, resources=[str(k) for k in keys]))

    async def _post_status(self, sha: str, state: StatusState, reason: str) -> None:
        s = self.settings
        if not (s.sync_status_repo and s.sync_status_token_ref):
            return
        target = StatusTarget(s.sync_status_repo, s.sync_status_token_ref,
                              api_url=s.sync_status_api, ca_file=s.ca_file)
        result = await post_status(target, sha, state, reason)
        if not result.ok:
            log.warning("sync: commit status for %s not posted: %s", sha[:12], result.error)
