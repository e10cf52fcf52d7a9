"""The incoming service's side of ``store.incoming`` (SPEC I1, I6, I7, I8).

The store keeps plain rows (``state.contract.Incoming`` says what and why); this
module turns a pipeline's judgement into the :class:`MailRecord` made durable
with its marker, and seals what a person needs of a mail moved to the error
folder (headers and why). Without a key only the codes are kept, never clear
text. Every method blocks (database I/O); the runner calls them in threads.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from reconciler.config.desired import canonical_json
from reconciler.config.sealing import SealError, seal, unseal
from reconciler.incoming.pipeline.event import PipelineResult
from reconciler.state.base import Audit, AuditEntry, AuditStatus, Store
from reconciler.state.contract import (
    ErrorDetails,
    Incoming,
    MailRecord,
    NewEvent,
    Recorded,
    StoredError,
    bare_id,
)

_HEADER_BYTES = 16_384  # of a failed mail's header section kept (sealed) for a person
# Of the whole mail kept (sealed) for `reconcile incoming errors export`: support needs
# the mail as it came; a larger one keeps its start (rawTruncated).
RAW_BYTES = 10 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class JudgedMail:
    """One mail the pipeline judged, for :meth:`IncomingStore.record_many`."""

    marker: str
    result: PipelineResult
    raw: bytes | None = None
    to_error_folder: bool = False


@dataclass(frozen=True, slots=True)
class ErrorRecord:
    id: int
    namespace: str
    server: str
    marker: str
    code: str
    created_at: datetime
    moved_back_at: datetime | None
    details: Mapping[str, Any] | None  # None: sealed without a key here, or never sealed
    sealed: bool


class IncomingStore:
    """``store.incoming`` plus the incoming side: pipeline results in, sealed details out.

    Every method but :meth:`record_many` and :meth:`errors` is the
    contract's own (``Incoming``), reached through this object unchanged.
    """

    def __init__(self, incoming: Incoming, seal_key: bytes | None = None,
                 audit: Audit | None = None) -> None:
        self._incoming = incoming
        self._key = seal_key
        self._audit = audit

    @classmethod
    def of_store(cls, store: Store, seal_key: bytes | None = None) -> IncomingStore:
        return cls(store.incoming, seal_key, store.audit)

    def sent_entries(self, namespace: str, message_id: str) -> list[AuditEntry]:
        """The SENT audit entries of the namespace's notification with this Message-ID
        (what a bounce is matched to); none without the audit."""
        if self._audit is None or not bare_id(message_id):
            return []
        return self._audit.search(status=AuditStatus.SENT, namespace=namespace,
                                  message_id=message_id, limit=1000)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._incoming, name)

    def record_many(self, namespace: str, server: str, items: Sequence[JudgedMail], *,
                    now: datetime | None = None) -> list[Recorded]:
        """Make mails' outcomes durable in one transaction (the runner's group commit):
        each one's marker, audit lines, event (with attachment bytes), Message-ID and,
        when it goes to the error folder, its sealed details.

        A marker already present means an earlier run made that mail durable:
        nothing is written for it and ``duplicate_marker`` says so.
        """
        return self._incoming.record(namespace, server, [self._mail(i) for i in items], now=now)

    def _mail(self, item: JudgedMail) -> MailRecord:
        result, event = item.result, item.result.event
        new = None
        if event is not None:
            ticket = (event.ticket.module, event.ticket.number) if event.ticket else None
            new = NewEvent(str(event.kind), bare_id(event.message_id) or None,
                           event.to_json().decode(), dict(result.attachment_data), ticket)
        error = None
        if item.to_error_folder:
            details = _details(result, item.marker, item.raw)
            sealed = (seal(self._key, canonical_json(details)) if self._key is not None else None)
            error = ErrorDetails(result.code, sealed)
        return MailRecord(item.marker, result.audit, new, result.message_id or None, error)

    def error(self, error_id: int) -> ErrorRecord | None:
        """One error-folder entry by its id, opened with this key where it can."""
        found = self._incoming.error(error_id)
        return self._record(found) if found is not None else None

    def errors(self, namespace: str, server: str, *,
               include_moved_back: bool = False) -> list[ErrorRecord]:
        """Error-folder entries, their details opened with this key where it can."""
        return [self._record(e) for e in self._incoming.errors(
            namespace, server, include_moved_back=include_moved_back)]

    def _record(self, e: StoredError) -> ErrorRecord:
        return ErrorRecord(e.id, e.namespace, e.server, e.marker, e.code, e.created_at,
                           e.moved_back_at, self._unseal(e.sealed), e.sealed is not None)

    def _unseal(self, sealed: str | None) -> Mapping[str, Any] | None:
        if sealed is None or self._key is None:
            return None
        try:
            return json.loads(unseal(self._key, sealed))
        except (SealError, ValueError):
            return None


def _details(result: PipelineResult, marker: str, raw: bytes | None) -> dict[str, Any]:
    headers = ""
    if raw is not None:
        end = raw.find(b"\r\n\r\n")
        if end < 0:
            end = raw.find(b"\n\n")
        head = raw[: end if end >= 0 else _HEADER_BYTES][:_HEADER_BYTES]
        headers = head.decode("utf-8", "replace")
    kept = {} if raw is None else {"raw": base64.b64encode(raw[:RAW_BYTES]).decode(),
                                   "rawTruncated": len(raw) > RAW_BYTES}
    return {"marker": marker, "status": str(result.status), "code": result.code,
            "stage": result.stage, "reason": result.reason, "messageId": result.message_id,
            "headers": headers, "size": len(raw) if raw is not None else None, **kept}
