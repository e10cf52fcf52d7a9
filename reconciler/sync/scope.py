"""Which SyncPolicy governs what a commit changes (SPEC X5).

A policy covers its namespace's resources of the kinds it lists (all kinds
when it lists none); a kind-specific policy wins over the namespace-wide one,
and a resource no policy covers gets the defaults (mode plan). One commit is
one revision, applied whole or not at all, so when it touches several scopes
the strictest of their settings holds for all of it: any scope in mode off or
plan holds the commit, the windows of every scope apply, deletions happen only
when every deleted resource's scope prunes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from reconciler.config.desired import ResourceKey
from reconciler.config.models.sync_policy import SelfHeal, SyncMode, SyncPolicy, SyncPolicySpec
from reconciler.sync.verify import VerifySettings
from reconciler.sync.windows import SyncWindow, parse_window

_MODE_ORDER = (SyncMode.OFF, SyncMode.PLAN, SyncMode.APPLY)
DEFAULT = SyncPolicySpec()


@dataclass(frozen=True)
class Decision:
    mode: SyncMode
    held_by: str  # the scope that set the mode, for the status reason
    windows: tuple[SyncWindow, ...]
    verify: VerifySettings | None  # None: no verification


class Scopes:
    def __init__(self, policies: Iterable[SyncPolicy]) -> None:
        self._by: dict[tuple[str, str], SyncPolicy] = {}
        for policy in policies:
            for kind in policy.spec.kinds or ["*"]:
                self._by[(policy.metadata.namespace, kind)] = policy

    def spec(self, key: ResourceKey) -> SyncPolicySpec:
        found = self._by.get((key.namespace, key.kind)) or self._by.get((key.namespace, "*"))
        return found.spec if found is not None else DEFAULT

    def name(self, key: ResourceKey) -> str:
        found = self._by.get((key.namespace, key.kind)) or self._by.get((key.namespace, "*"))
        return (f"SyncPolicy {key.namespace}/{found.metadata.name}" if found is not None
                else f"no SyncPolicy for {key.kind} in namespace {key.namespace} (default)")

    def decide(self, keys: Iterable[ResourceKey]) -> Decision:
        keys = list(keys)
        specs = [self.spec(k) for k in keys]
        mode, held_by = SyncMode.APPLY, ""
        for key, spec in zip(keys, specs, strict=True):
            if _MODE_ORDER.index(SyncMode(spec.mode)) < _MODE_ORDER.index(mode):
                mode, held_by = SyncMode(spec.mode), self.name(key)
        windows = {(w.kind, w.schedule, w.duration, w.time_zone) for s in specs for w in s.windows}
        checks = [s.verify for s in specs if s.verify.enabled]
        verify = VerifySettings(max(v.window_seconds for v in checks),
                                min(v.interval_seconds for v in checks),
                                min(v.failures for v in checks)) if checks else None
        return Decision(mode, held_by, tuple(parse_window(*w) for w in sorted(windows)), verify)

    def prunes(self, deleted: Iterable[ResourceKey]) -> bool:
        return all(self.spec(k).prune for k in deleted)

    def self_heal(self, drifted: Iterable[ResourceKey]) -> SelfHeal:
        """heal only when every drifted resource's scope heals; off when none cares."""
        modes = {SelfHeal(self.spec(k).self_heal) for k in drifted} - {SelfHeal.OFF}
        if not modes:
            return SelfHeal.OFF
        return SelfHeal.HEAL if modes == {SelfHeal.HEAL} else SelfHeal.WARN
