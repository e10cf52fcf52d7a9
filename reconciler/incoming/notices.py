"""Admin notifications about incoming servers (SPEC I6, I7), through the health notifier.

The health :class:`~reconciler.health.notifier.Notifier` already logs, posts
to the webhook (retried, URL hidden in logs) and mails the namespace's
admins through the outbox; incoming servers reuse it with their own texts.
Events (``payload()["event"]``):

- ``incoming.unreachable``: ``failureNotifyThreshold`` consecutive
  connection failures (sent once per outage);
- ``incoming.recovered``: the first good session after that notice;
- ``incoming.stopped``: the error folder reached ``stopFetchingAfter``;
- ``incoming.error-folder``: one mail was moved to the error folder
  (``errorFolder.notify``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from reconciler.config.desired import ResourceKey
from reconciler.health.notifier import RECOVERED, UNREACHABLE, Transition

STOPPED = "stopped"
ERROR_FOLDER = "error-folder"
KIND = "IncomingServer"


class IncomingTransition(Transition):
    """A Transition whose texts speak of fetching, not sending."""

    __slots__ = ()

    def summary(self) -> str:
        where = f"{self.key.namespace}/{self.key.name}"
        if self.event == UNREACHABLE:
            return f"incoming server {where} cannot fetch mail: {self.error}"
        if self.event == RECOVERED:
            return f"incoming server {where} fetches mail again"
        if self.event == STOPPED:
            return f"incoming server {where} stopped fetching: {self.error}"
        return f"incoming server {where} moved a mail to the error folder: {self.error}"

    def payload(self) -> dict[str, Any]:
        return {**super().payload(), "event": f"incoming.{self.event}"}


def unreachable(namespace: str, name: str, failures: int, error: str, kind: str,
                hint: str | None) -> IncomingTransition:
    return IncomingTransition(
        ResourceKey(KIND, namespace, name), UNREACHABLE, "Fetching", "Unreachable",
        datetime.now(UTC), error=f"{failures} consecutive failures; last: {error}",
        failed_step=kind, hint=hint)


def recovered(namespace: str, name: str, failures: int) -> IncomingTransition:
    return IncomingTransition(
        ResourceKey(KIND, namespace, name), RECOVERED, "Unreachable", "Fetching",
        datetime.now(UTC), error=None, hint=f"after {failures} failed attempts")


def stopped(namespace: str, name: str, count: int, folder: str) -> IncomingTransition:
    return IncomingTransition(
        ResourceKey(KIND, namespace, name), STOPPED, "Fetching", "Stopped",
        datetime.now(UTC),
        error=f"the error folder {folder} holds {count} mails (stopFetchingAfter)",
        hint=f"look at the mails in {folder}, then run `reconcile incoming retry {name} "
             f"--namespace {namespace}` to move them back and fetch again")


def moved_to_error_folder(namespace: str, name: str, folder: str, code: str,
                          reason: str) -> IncomingTransition:
    return IncomingTransition(
        ResourceKey(KIND, namespace, name), ERROR_FOLDER, "Fetching", "Fetching",
        datetime.now(UTC), error=f"{code}: {reason}"[:500],
        hint=f"the mail is in {folder}; its details are stored encrypted; "
             f"`reconcile incoming retry {name}` processes it again")
