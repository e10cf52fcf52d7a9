"""Attachments over a server's limit (SPEC O4): which ones, and whether the server
leaves them out or refuses the notification (``attachments.oversize``).

One decision for compose (what is sent), the intake API and `reconcile send`
(what the client is told before anything is stored, routing with the live
config); the SENT audit entry records what the worker really left out, should
an apply change the route meanwhile.

``attachmentLimitMB`` counts MiB of attachment data before encoding, for the
attachments together, taken in the order given; one that would push the total
over the limit is left out and the following ones are still considered.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from reconciler.config.derive import DEFAULT_ATTACHMENT_LIMIT_MB
from reconciler.config.models.outgoing_server import OutgoingServer, Oversize
from reconciler.mail.envelope import Attachment, DroppedAttachment, Notification

if TYPE_CHECKING:
    from reconciler.runtime.namespace import NamespaceConfig

MIB = 1024 * 1024


def limit_mb(server: OutgoingServer) -> float:
    # None only for a server that skipped derivation (built in code, `live set`)
    return server.spec.attachment_limit_mb or DEFAULT_ATTACHMENT_LIMIT_MB


def refuses(server: OutgoingServer) -> bool:
    return server.spec.attachments.oversize == Oversize.REFUSE


def select_attachments(attachments: Sequence[Attachment],
                       limit: float) -> tuple[list[Attachment], list[DroppedAttachment]]:
    """(kept, left out) for a limit of ``limit`` MB."""
    cap = int(limit * MIB)
    kept: list[Attachment] = []
    dropped: list[DroppedAttachment] = []
    total = 0
    for item in attachments:
        if total + item.size > cap:
            over = (f"{item.size} bytes is" if item.size > cap
                    else f"would bring the attachments to {total + item.size} bytes,")
            dropped.append(DroppedAttachment(item.name, item.size,
                                             f"{over} above the limit of {limit:g} MB"))
            continue
        kept.append(item)
        total += item.size
    return kept, dropped


@dataclass(frozen=True, slots=True)
class Oversized:
    """The attachments ``server`` would not send, and what it does about them."""

    server: str
    limit_mb: float
    dropped: tuple[tuple[int, DroppedAttachment], ...]  # (position in the request, file)
    refused: bool

    @property
    def limit_bytes(self) -> int:
        return int(self.limit_mb * MIB)

    def to_json(self) -> list[dict[str, Any]]:
        """The ``droppedAttachments`` of the intake answer."""
        return [{"name": d.name, "size": d.size, "limit": self.limit_bytes,
                 "reason": d.reason, "server": self.server} for _, d in self.dropped]

    def refusal(self, item: DroppedAttachment) -> str:
        """Why one file makes the notification refused, and what to do."""
        return (f"attachment {item.name!r}: {item.reason} ({self.limit_bytes} bytes) of "
                f"server {self.server}, which refuses oversize attachments "
                "(attachments.oversize: refuse); send a smaller file or a link instead")


def routed_oversized(namespace: NamespaceConfig,
                     notification: Notification) -> Oversized | None:
    """What the server ``namespace`` routes the notification to now would leave out;
    None when nothing is too large or no server would take it (the worker records that
    case as not sent)."""
    attachments = notification.attachments
    if not attachments:  # before routing: most notifications have none
        return None
    server = namespace.route(notification.module, notification.context).server
    if server is None:
        return None
    limit = limit_mb(server)
    kept, dropped = select_attachments(attachments, limit)
    if not dropped:
        return None
    kept_ids = {id(a) for a in kept}
    left_out = [i for i, a in enumerate(attachments) if id(a) not in kept_ids]
    return Oversized(server.metadata.name, limit, tuple(zip(left_out, dropped, strict=True)),
                     refuses(server))
