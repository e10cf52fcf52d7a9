"""The incoming side as the daemon runs it: runner, retention and, with a webhook, the
event sink, built from :class:`~reconciler.runtime.settings.DaemonSettings`.

``--events-webhook`` is a daemon setting, not a field of the config repo: the
receiver is the one desk application this daemon serves (like the API tokens
and the admin-notification webhook), and ticket events carry mail content, so a
namespace's config that could redirect them could read other people's mail.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from reconciler.incoming.pipeline.directory import MappingSenderDirectory
from reconciler.incoming.retention import DAY_S, IncomingRetention
from reconciler.incoming.runner import IncomingRunner, RunnerOptions
from reconciler.incoming.sink import SINK_ROLE, WebhookSink
from reconciler.incoming.store import IncomingStore

log = logging.getLogger(__name__)

Part = Callable[[Any], Awaitable[None]]  # takes the daemon's stop event


@dataclass
class IncomingParts:
    runner: IncomingRunner
    sink: WebhookSink | None
    retention: IncomingRetention

    def tasks(self) -> dict[str, Part]:
        parts: dict[str, Part] = {"incoming": self.runner.run}
        if self.retention.active:
            parts["incoming retention"] = self.retention.run
        if self.sink is not None:
            parts["event sink"] = self.sink.run
        return parts


def incoming_parts(store: Any, settings: Any, *, notifier: Any = None,
                   token_provider: Any = None) -> IncomingParts:
    """The runner (and sink) for this daemon. Raises ValueError/SecretError on a bad
    setting (an unreadable sender directory), before anything runs."""
    from reconciler.oauth.cache import TokenKeyError, load_key

    try:
        key: bytes | None = load_key(settings.token_key_ref)
    except TokenKeyError:
        key = None
        log.warning("no sealing key (RECONCILE_TOKEN_KEY or --token-key): details of mails "
                    "moved to an error folder are not kept, only their reason codes")
    incoming = IncomingStore.of_store(store, key)
    directory = None
    if settings.sender_directory:
        directory = MappingSenderDirectory.from_file(settings.sender_directory)
    sink = None
    if settings.events_webhook:
        sink = WebhookSink(incoming, settings.events_webhook, secret=settings.events_secret,
                           ca_file=settings.ca_file,
                           leadership=store.leases.leader(SINK_ROLE))
    marker_days = settings.marker_retention_days or None
    options = RunnerOptions(reload_interval_seconds=settings.reload_interval_seconds,
                            interval_override=settings.incoming_interval_seconds,
                            marker_retention_seconds=marker_days * DAY_S if marker_days
                            else None)
    runner = IncomingRunner(store, incoming, owner=settings.worker_id, notifier=notifier,
                            token_provider=token_provider, ca_file=settings.ca_file,
                            directory=directory, options=options,
                            on_event=sink.wake if sink is not None else None)
    retention = IncomingRetention(incoming, event_days=settings.event_retention_days,
                                  marker_days=marker_days)
    return IncomingParts(runner, sink, retention)
