"""The operator's outbox actions (SPEC O13), shared by ``reconcile outbox`` and the
daemon's ``/v1/outbox`` routes: which store call an action is, the requeue
target check, and what to tell the operator about a message left alone.

The store does the work (``state.outbox_control``); this module holds the
rules on top that need the live config, so the CLI and the API cannot drift.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from enum import StrEnum

from reconciler.runtime.live_config import LiveConfig
from reconciler.state.base import OutboxState, RoutingSnapshot, Store
from reconciler.state.outbox_control import ControlResult, QueueFilter

S = OutboxState


class Action(StrEnum):
    HOLD = "hold"
    RELEASE = "release"
    RETRY = "retry"
    CANCEL = "cancel"
    REQUEUE = "requeue"


class QueueError(ValueError):
    """The action cannot be done as asked; the text says why and what to do."""


# Hold and cancel wait for a message in flight (cli.outbox --wait); the others
# leave it: it is being sent already.
WAITS_FOR_FLIGHT = frozenset({Action.HOLD, Action.CANCEL})


def selection(action: Action, ids: Sequence[int] = (), *, server: str | None = None,
              namespace: str | None = None, all_deferred: bool = False,
              all_held: bool = False) -> QueueFilter:
    """The messages an action names: ids, or a server (optionally in one namespace),
    or every deferred (retry) / held (release) message; never all by accident."""
    wide = {"--all-deferred": all_deferred and action is Action.RETRY,
            "--all": all_held and action is Action.RELEASE}
    if (all_deferred and action is not Action.RETRY) or (all_held and action
                                                         is not Action.RELEASE):
        raise QueueError(f"{action}: --all-deferred goes with retry, --all with release")
    given = bool(ids) + bool(server) + any(wide.values())
    if given != 1:
        choices = "IDs or --server NAME" + "".join(f" or {k}" for k in wide)
        raise QueueError(f"{action}: name the messages with exactly one of {choices}")
    if ids:
        return QueueFilter(ids=tuple(ids), namespace=namespace)
    states = ((S.RETRY_WAIT,) if all_deferred else (S.HELD,) if all_held else ())
    return QueueFilter(states=states, server=server, namespace=namespace)


def requeue_target(store: Store, config: LiveConfig, where: QueueFilter,
                   server: str) -> RoutingSnapshot:
    """The route to move the messages of ``where`` to: ``server`` must exist and be
    enabled in the live config of every namespace they are in."""
    found = store.outbox.search(where, limit=None)
    namespaces = {where.namespace} if where.namespace else {m.namespace for m in found}
    for namespace in sorted(namespaces):
        ns = config.namespaces.get(namespace)
        target = ns.servers.get(server) if ns is not None else None
        if target is None:
            known = ", ".join(sorted(ns.servers)) if ns is not None else "none"
            raise QueueError(
                f"server {server!r} does not exist in namespace {namespace} at live revision "
                f"{config.revision} (servers there: {known}); requeue through one of them")
        if not target.spec.enabled:
            raise QueueError(
                f"server {server!r} in namespace {namespace} is disabled (enabled: false) at "
                f"live revision {config.revision}; enable it and apply, or pick another")
    return RoutingSnapshot(config.revision, server)


def perform(store: Store, action: Action, where: QueueFilter, *, actor: str, reason: str = "",
            to: RoutingSnapshot | None = None) -> ControlResult:
    """Run one action through the store contract (one transaction, audited)."""
    outbox = store.outbox
    if action is Action.CANCEL and not reason.strip():
        raise QueueError("a cancel needs a reason (--reason TEXT); it goes into the audit")
    calls: dict[Action, Callable[..., ControlResult]] = {
        Action.HOLD: outbox.hold, Action.RELEASE: outbox.release_held,
        Action.RETRY: outbox.retry_now, Action.CANCEL: outbox.cancel,
    }
    if action is Action.REQUEUE:
        if to is None:
            raise QueueError("requeue needs the server to send through (--to-server NAME)")
        return outbox.requeue(where, to, actor=actor, reason=reason)
    return calls[action](where, actor=actor, reason=reason)


_WHY = {
    S.LEASED: "is being sent right now; it ends sent, or comes back for a retry and can "
              "then be changed: try again in a moment",
    S.SENT: "was already sent", S.FAILED: "has already failed for good",
    S.IGNORED: "was already finished as ignored (no recipient left to send to)",
    S.CANCELLED: "is already cancelled", S.HELD: "is held; release it first",
    S.QUEUED: "is queued, not held", S.RETRY_WAIT: "is waiting for a retry, not held",
}


def refusal(action: Action, id: int, state: OutboxState | None) -> str:
    """Why message ``id`` was left as it was, for the operator."""
    if state is None:
        return f"message {id}: there is no such message (never accepted, or purged)"
    return f"message {id}: not {_DONE[action]}: it {_WHY[state]}"


_DONE = {Action.HOLD: "held", Action.RELEASE: "released", Action.RETRY: "retried",
         Action.CANCEL: "cancelled", Action.REQUEUE: "requeued"}


def done_text(action: Action, ids: Sequence[int], actor: str) -> str:
    listed = ", ".join(map(str, ids[:20])) + (", ..." if len(ids) > 20 else "")
    what = f"{len(ids)} message{'s' if len(ids) != 1 else ''}"
    return f"{_DONE[action]} {what}" + (f": {listed}" if ids else "") + f" (by {actor})"
