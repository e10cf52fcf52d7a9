"""Notifications of the incoming side: about its servers (SPEC I6, I7), through the health
notifier (it already logs, posts to the webhook and mails the namespace's admins),
and about stripped attachments (I5), as outbox mails to the sender and the admins.

Events (``payload()["event"]``): ``incoming.unreachable`` (``failureNotifyThreshold``
consecutive connection failures, once per outage), ``incoming.recovered`` (the
first good session after that), ``incoming.stopped`` (the error folder reached
``stopFetchingAfter``), ``incoming.error-folder`` (a mail moved there,
``errorFolder.notify``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from reconciler.config.derive import INCOMING_PORTS
from reconciler.config.desired import ResourceKey
from reconciler.config.endpoints import host_endpoint
from reconciler.config.models.incoming_server import IncomingProtocol, IncomingServer
from reconciler.incoming.pipeline.event import Audience, Notice
from reconciler.runtime.notifier import RECOVERED, UNREACHABLE, Transition
from reconciler.state.base import EnqueueRequest

STOPPED = "stopped"
ERROR_FOLDER = "error-folder"
NOTICE_MODULE = "incoming"  # the module of stripped-attachment mails (routing rules see it)

_SUMMARIES = {
    UNREACHABLE: "cannot fetch mail: {error}",
    RECOVERED: "fetches mail again",
    STOPPED: "stopped fetching: {error}",
    ERROR_FOLDER: "moved a mail to the error folder: {error}",
}


@dataclass(frozen=True, slots=True)
class IncomingTransition(Transition):
    """A Transition whose texts speak of fetching from a mailbox, not of sending;
    ``address`` is host:port, or the EWS / Graph URL."""

    mailbox: str | None = None
    protocol: str | None = None
    failures: int | None = None  # consecutive failed sessions (unreachable, recovered)

    def summary(self) -> str:
        what = _SUMMARIES[self.event].format(error=self.error)
        return f"incoming server {self.key.namespace}/{self.key.name} {what}"

    def facts(self) -> list[tuple[str, str | None]]:
        failures = None
        if self.failures:
            failures = (f"{self.failures} in a row" if self.event == UNREACHABLE
                        else f"{self.failures} before this recovery")
        return [("Server", f"{self.key.namespace}/{self.key.name} (incoming)"),
                ("Mailbox", self.mailbox), ("Protocol", self.protocol),
                ("Host", self.address),
                ("Status", f"{self.old_state} -> {self.new_state}"),
                ("Failed sessions", failures), ("Failed step", self.failed_step),
                ("Last error", self.error), ("Likely fix", self.hint),
                ("Time", self.at.isoformat())]

    def payload(self) -> dict[str, Any]:
        data = {**Transition.payload(self), "event": f"incoming.{self.event}",
                "mailbox": self.mailbox, "protocol": self.protocol,
                "consecutiveFailures": self.failures}
        data.pop("activeHost", None)  # there is no alternate host to fetch from
        return data


def endpoint(server: IncomingServer) -> str | None:
    """Where the server fetches from, as an admin would look it up."""
    spec = server.spec
    protocol = IncomingProtocol(spec.protocol)
    if protocol == IncomingProtocol.EWS:
        return str(spec.ews_url) if spec.ews_url else "autodiscover"
    if protocol == IncomingProtocol.GRAPH:
        return str(spec.graph_endpoint) if spec.graph_endpoint else "Microsoft Graph"
    if not spec.host:
        return None
    return host_endpoint(str(spec.host), spec.port or INCOMING_PORTS[protocol])


def _transition(server: IncomingServer, event: str, old: str, new: str, *,
                error: str | None, hint: str | None, failed_step: str | None = None,
                failures: int | None = None) -> IncomingTransition:
    meta = server.metadata
    return IncomingTransition(
        ResourceKey(server.kind, meta.namespace, meta.name), event, old, new, datetime.now(UTC),
        error=error, failed_step=failed_step, hint=hint, mailbox=str(server.spec.email),
        protocol=str(server.spec.protocol), address=endpoint(server), failures=failures)


def unreachable(server: IncomingServer, failures: int, error: str, kind: str,
                hint: str | None) -> IncomingTransition:
    return _transition(server, UNREACHABLE, "Fetching", "Unreachable",
                       error=f"{failures} consecutive failures; last: {error}",
                       failed_step=kind, hint=hint, failures=failures)


def recovered(server: IncomingServer, failures: int) -> IncomingTransition:
    return _transition(server, RECOVERED, "Unreachable", "Fetching", error=None,
                       hint=None, failures=failures)


def stopped(server: IncomingServer, count: int) -> IncomingTransition:
    meta, folder = server.metadata, server.spec.error_folder.name
    return _transition(
        server, STOPPED, "Fetching", "Stopped",
        error=f"the error folder {folder} holds {count} mails (stopFetchingAfter)",
        hint=f"look at the mails in {folder}, then run `reconcile incoming retry {meta.name} "
             f"--namespace {meta.namespace}` to move them back and fetch again")


def moved_to_error_folder(server: IncomingServer, code: str,
                          reason: str) -> IncomingTransition:
    meta, folder = server.metadata, server.spec.error_folder.name
    return _transition(
        server, ERROR_FOLDER, "Fetching", "Fetching", error=f"{code}: {reason}"[:500],
        hint=f"the mail is in {folder}; its details are stored encrypted; "
             f"`reconcile incoming retry {meta.name} --namespace {meta.namespace}` "
             "processes it again")


def stripped_attachment_mails(notices: Sequence[Notice], namespace: str, server: str,
                              marker: str, admins: Sequence[str]) -> list[EnqueueRequest]:
    """The outbox mails telling the sender and ``admins`` which attachments were stripped;
    keyed by the mail's marker, so a mail judged twice does not notify twice."""
    requests = []
    for index, notice in enumerate(notices):
        to: list[str] = []
        if Audience.SENDER in notice.audience and notice.sender:
            to.append(notice.sender)
        if Audience.ERROR_RECIPIENTS in notice.audience:
            to += [a for a in admins if a not in to]
        if not to:
            continue
        body = notice.reason + "\n\n" + "".join(f"- {item}\n" for item in notice.items)
        requests.append(EnqueueRequest(
            {"module": NOTICE_MODULE, "namespace": namespace, "to": to,
             "subject": notice.subject, "textBody": body},
            namespace, f"incoming:{server}:{marker}:{index}"[:200]))
    return requests
