"""The incoming-mail pipeline (SPEC I2-I5): pure stages from raw bytes to a ticket event.

Usage by the runner (fetch -> pipeline -> store -> mark done)::

    ctx = PipelineContext.from_resources(server, namespace_resources,
                                         directory=MappingSenderDirectory.from_file(path),
                                         seen_message_id=store_lookup,
                                         thread_lookup=ticket_of_message_ids)
    result = process(raw_bytes, ctx, received_at=fetched_at)
    # result.audit      -> write (RECEIVED, [ATTACHMENT_PROCESSED_FAILED...], final)
    # result.event      -> TicketEvent when result.status is PROCESSED (event.to_json())
    # result.attachment_data[sha256] -> bytes of each kept attachment
    # result.notices    -> notifications to send (stripped attachments)
    # result.move_to_error_folder -> unreadable / unexpected: keep the mail for a person

Nothing here does I/O; ``process`` never raises for anything in a mail.
``STAGE_NAMES`` lists the stages in the order they run (see stages.py).
"""

from reconciler.incoming.pipeline.context import PipelineContext
from reconciler.incoming.pipeline.directory import (
    DirectoryEntry,
    DirectoryError,
    MappingSenderDirectory,
    SenderDirectory,
    UserStatus,
)
from reconciler.incoming.pipeline.event import (
    Address,
    Audience,
    EventAttachment,
    EventKind,
    Notice,
    PipelineResult,
    RefSource,
    TicketEvent,
    TicketRef,
)
from reconciler.incoming.pipeline.run import STAGE_NAMES, process
from reconciler.incoming.pipeline.verdict import Code

__all__ = [
    "STAGE_NAMES",
    "Address",
    "Audience",
    "Code",
    "DirectoryEntry",
    "DirectoryError",
    "EventAttachment",
    "EventKind",
    "MappingSenderDirectory",
    "Notice",
    "PipelineContext",
    "PipelineResult",
    "RefSource",
    "SenderDirectory",
    "TicketEvent",
    "TicketRef",
    "UserStatus",
    "process",
]
