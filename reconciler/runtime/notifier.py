"""Admin notifications for health transitions (SPEC O9).

Only transitions notify: a server becoming Unreachable, recovering, or sends
moving to the alternate host and back. Every transition is logged, POSTed as JSON
to the webhook if one is configured (retried with backoff), and mailed to the
namespace's ``adminNotifications.emails`` (:class:`AdminMail`). Texts come from
probe reports, which went through the probe's redactor, so no password, token or
their encodings reach the payload, the mail or the log. The incoming side and the
sync loop (SPEC X5) send their own events through the same channels as subclasses
of :class:`Transition` (``module`` names them in the admin mail and the logs).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import KW_ONLY, dataclass
from datetime import datetime
from typing import Any, ClassVar

from reconciler.config.desired import ResourceKey
from reconciler.config.secrets import SecretError
from reconciler.runtime import backoff
from reconciler.runtime.live_config import ConfigHolder
from reconciler.runtime.namespace import NamespaceConfig
from reconciler.runtime.webhook import WebhookPoster
from reconciler.state.base import EnqueueRequest, RoutingSnapshot, Store

log = logging.getLogger(__name__)

UNREACHABLE = "unreachable"
RECOVERED = "recovered"
FAILOVER = "failover"  # sends go to the alternate host now
FAILBACK = "failback"  # and back to the main host


@dataclass(frozen=True, slots=True)
class Transition:
    key: ResourceKey
    event: str
    old_state: str
    new_state: str
    at: datetime
    error: str | None = None
    failed_step: str | None = None
    hint: str | None = None
    active_host: str = "main"
    address: str | None = None  # host:port sends go to now
    module: ClassVar[str] = "health"  # of the admin mail (the sync loop's say "sync")

    @property
    def warning(self) -> bool:
        """Logged as a warning: something stopped working."""
        return self.event in (UNREACHABLE, FAILOVER)

    def payload(self) -> dict[str, Any]:
        return {"event": f"server.{self.event}", "kind": self.key.kind,
                "namespace": self.key.namespace, "server": self.key.name,
                "oldStatus": self.old_state, "newStatus": self.new_state,
                "error": self.error, "failedStep": self.failed_step, "hint": self.hint,
                "activeHost": self.active_host, "address": self.address,
                "time": self.at.isoformat()}

    def facts(self) -> list[tuple[str, str | None]]:
        """The admin mail's "Name: value" lines (empty values are left out)."""
        return [("Server", f"{self.key.namespace}/{self.key.name}"),
                ("Status", f"{self.old_state} -> {self.new_state}"),
                ("Sends go to", f"{self.active_host} host"
                 + (f" ({self.address})" if self.address else "")),
                ("Failed step", self.failed_step), ("Error", self.error),
                ("Likely fix", self.hint), ("Time", self.at.isoformat())]

    def summary(self) -> str:
        return _SUMMARIES[self.event].format(t=self, where=f"{self.key.namespace}/{self.key.name}")


_SUMMARIES = {
    UNREACHABLE: "outgoing server {where} is Unreachable: {t.error}",
    RECOVERED: "outgoing server {where} is Reachable again (via {t.active_host} host)",
    FAILOVER: "outgoing server {where}: main host unreachable, sending via the alternate host "
              "{t.address}",
    FAILBACK: "outgoing server {where}: main host {t.address} is back; sends return to it",
}


@dataclass(eq=False)
class AdminMail:
    """Mails transitions to the namespace's ``adminNotifications.emails`` (SPEC O9).

    The mail is an ordinary outbox notification: durable, retried and audited.
    Its routing is pinned (``RoutingSnapshot``) to the namespace's enabled primary,
    or, when the transition says *that* server is Unreachable, to another enabled
    server (primary first, then by name): a notice about a server that cannot send
    never goes through it. With no other server the transition stays in the log
    (and the webhook) only, and the log says so.
    """

    store: Store
    config: ConfigHolder

    async def send(self, transition: Transition) -> bool:
        """Queue the mail; True when queued or nobody is to be mailed. Never raises."""
        live = self.config.current
        key = transition.key
        ns = live.namespaces.get(key.namespace)
        emails = list(ns.settings.spec.admin_notifications.emails) if ns and ns.settings else []
        if ns is None or not emails:
            return True
        server = _sender(ns, transition)
        if server is None:
            log.warning("no admin email about %s/%s (%s): the namespace has no enabled "
                        "outgoing server other than the one that is down; see this log or "
                        "the webhook", key.namespace, key.name, transition.event,
                        extra={"health": transition.payload()})
            return False
        request = EnqueueRequest(
            _admin_notification(transition, emails), key.namespace,
            f"{transition.module}:{key.namespace}/{key.name}:{transition.event}:"
            f"{transition.at.isoformat()}",
            RoutingSnapshot(live.revision, server))
        try:
            [result] = await asyncio.to_thread(self.store.outbox.enqueue_many, [request])
        except Exception as exc:  # a store outage must not stop health checks
            log.error("admin email about %s/%s not queued: %s", key.namespace, key.name, exc)
            return False
        log.info("admin email about %s/%s (%s) queued as outbox %s via server %s",
                 key.namespace, key.name, transition.event, result.id, server,
                 extra={"outbox_id": result.id, "server": server})
        return True


def _sender(ns: NamespaceConfig, transition: Transition) -> str | None:
    # Only an outgoing server can be the one that is down (an incoming one may share its name).
    down = (transition.key.name if transition.event == UNREACHABLE
            and transition.key.kind == "OutgoingServer" else None)
    usable = [s for s in ns.servers.values() if s.spec.enabled and s.metadata.name != down]
    usable.sort(key=lambda s: (not s.spec.primary, s.metadata.name))
    return usable[0].metadata.name if usable else None


def _admin_notification(transition: Transition, emails: list[str]) -> dict[str, Any]:
    body = transition.summary() + "\n\n" + "".join(
        f"{name}: {value}\n" for name, value in transition.facts() if value)
    return {
        "module": transition.module,  # routing is pinned: no rule applies
        "namespace": transition.key.namespace,
        "to": emails,
        # Header text: one line whatever the error said (the body has it in full).
        "subject": "[reconcile] " + " ".join(transition.summary().split())[:200],
        "textBody": body,
    }


@dataclass(repr=False, eq=False)  # identity as before; the webhook URL may carry its token
class Notifier:
    webhook: str | None = None
    _: KW_ONLY
    attempts: int = 4
    backoff_seconds: float = 0.5
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    mail: AdminMail | None = None

    def __post_init__(self) -> None:
        self.webhook = self.webhook or None
        self.attempts = max(self.attempts, 1)

    async def notify(self, transition: Transition) -> bool:
        """Log the transition, deliver it to the webhook and queue the admin email; True
        when every configured channel took it. Never raises: a broken webhook or store
        must not stop health checks."""
        level = logging.WARNING if transition.warning else logging.INFO
        log.log(level, "%s", transition.summary(), extra={"health": transition.payload()})
        mailed = await self.mail.send(transition) if self.mail is not None else True
        if self.webhook is None:
            return mailed
        try:
            async with WebhookPoster(self.webhook, timeout_seconds=5.0) as poster:
                return await self._post(poster, transition) and mailed
        except SecretError as exc:
            log.error("cannot send the %s notification: webhook reference: %s",
                      transition.module, exc)
            return False

    async def _post(self, poster: WebhookPoster, transition: Transition) -> bool:
        body = json.dumps(transition.payload()).encode()
        for attempt in range(1, self.attempts + 1):
            refusal = await poster.post(body)
            if refusal is None:
                return True
            if refusal.permanent or attempt == self.attempts:
                log.error("%s notification to %s not delivered after %d attempt(s): %s",
                          transition.module, poster.shown, attempt, refusal.why)
                return False
            # No jitter: one notifier per daemon, nothing to spread.
            delay = backoff.backoff_seconds(attempt, self.backoff_seconds, math.inf, jitter=0.0)
            log.info("%s notification to %s failed (%s); retrying in %.1fs",
                     transition.module, poster.shown, refusal.why, delay)
            await self.sleep(delay)
        return False  # pragma: no cover - the loop always returns
