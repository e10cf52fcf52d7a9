"""Notifications of the sync loop (SPEC X5, issue 13 item 7).

Sync outcomes go through the health notifier (``runtime.notifier``): logged,
POSTed once to the daemon's webhook (signed and retried like every other
notification) and mailed through the outbox to ``adminNotifications.emails``
of each namespace the outcome concerns, routed through one of that
namespace's working servers.

Events (``payload()["event"]``): ``sync.succeeded``, ``sync.failed`` (validation,
a policy denial, the safety threshold, a credential move awaiting approval),
``sync.degraded`` (verify found a broken server), ``sync.rolled-back`` (and
the rollback revision), ``sync.drift`` (out-of-band changes, warned or healed).

Functions:

- ``SyncOutcome(event, commit, reason, namespaces=(), revision=None,
  failed_step=None, resources=(), at=now)``: what happened, plain data.
- ``await notify_sync(notifier, outcome) -> bool``: True when every configured
  channel took it; never raises. Namespaces: the ones the outcome names (changed,
  drifted or rolled-back resources); none means a mail to no one, the webhook
  and the log still get it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar

from reconciler.config.desired import ResourceKey
from reconciler.runtime.notifier import Notifier, Transition

SUCCEEDED, FAILED, DEGRADED, ROLLED_BACK, DRIFT = (
    "succeeded", "failed", "degraded", "rolled-back", "drift")
# The sync state each event leaves (the names `reconcile sync status` shows).
STATE = {SUCCEEDED: "Synced", FAILED: "Failed", DEGRADED: "Degraded", ROLLED_BACK: "Degraded",
         DRIFT: "OutOfSync"}
_SUMMARIES = {
    SUCCEEDED: "sync of commit {c} succeeded",
    FAILED: "sync of commit {c} failed: {r}",
    DEGRADED: "sync of commit {c} is Degraded: {r}",
    ROLLED_BACK: "sync of commit {c} was rolled back: {r}",
    DRIFT: "drift at commit {c}: {r}",
}
KIND = "SyncPolicy"  # what a sync notice is about, as Transition.key names it


@dataclass(frozen=True, slots=True)
class SyncOutcome:
    event: str
    commit: str
    reason: str
    namespaces: Sequence[str] = ()
    revision: int | None = None  # the apply, heal or rollback revision written
    failed_step: str | None = None
    resources: Sequence[str] = ()  # Kind/namespace/name of what the outcome is about
    at: datetime = field(default_factory=lambda: datetime.now(UTC))


@dataclass(frozen=True, slots=True)
class SyncTransition(Transition):
    """One outcome as the notifier carries it; ``key.namespace`` picks the admins."""

    outcome: SyncOutcome | None = None
    module: ClassVar[str] = "sync"

    @property
    def warning(self) -> bool:
        return self.event != SUCCEEDED

    def _outcome(self) -> SyncOutcome:
        assert self.outcome is not None
        return self.outcome

    def summary(self) -> str:
        o = self._outcome()
        return _SUMMARIES[o.event].format(c=o.commit[:12], r=o.reason)

    def facts(self) -> list[tuple[str, str | None]]:
        o = self._outcome()
        return [("Commit", o.commit), ("State", self.new_state),
                ("Revision", str(o.revision) if o.revision is not None else None),
                ("Reason", o.reason), ("Failed step", o.failed_step),
                ("Resources", ", ".join(o.resources) or None), ("Time", o.at.isoformat())]

    def payload(self) -> dict[str, Any]:
        o = self._outcome()
        return {"event": f"sync.{o.event}", "commit": o.commit, "state": self.new_state,
                "reason": o.reason, "revision": o.revision, "failedStep": o.failed_step,
                "namespaces": list(o.namespaces), "resources": list(o.resources),
                "time": o.at.isoformat()}


def transitions(outcome: SyncOutcome) -> list[SyncTransition]:
    """One per namespace concerned (the first also goes to the webhook)."""
    if outcome.event not in STATE:
        raise ValueError(f"unknown sync event {outcome.event!r}; one of {', '.join(STATE)}")
    return [SyncTransition(ResourceKey(KIND, ns, "sync"), outcome.event, "", STATE[outcome.event],
                           outcome.at, error=outcome.reason, failed_step=outcome.failed_step,
                           outcome=outcome)
            for ns in sorted(set(outcome.namespaces)) or [""]]


async def notify_sync(notifier: Notifier, outcome: SyncOutcome) -> bool:
    first, *rest = transitions(outcome)
    delivered = await notifier.notify(first)
    for other in rest:
        if notifier.mail is not None:
            delivered = await notifier.mail.send(other) and delivered
    return delivered
