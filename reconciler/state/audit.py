"""The email audit (SPEC O8): what happened to each notification, searchable.

One row per recipient per attempt, so "what happened to mail for
jane@example.com" is an index lookup. Rows are append-only; ``purge`` is the
retention knob.

Audit text comes from many places (server replies, exception messages, the
composed spec of a server) and is kept for years, so it is redacted on the
way in: secret references through :func:`reconciler.config.secrets.redact`,
and free text through :func:`redact_text`, which removes the credential
shapes that can appear in an error (URL passwords, SMTP AUTH arguments,
bearer tokens, ``password=...``, encrypted references).
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    delete,
    func,
    insert,
    or_,
    select,
    union_all,
)

from reconciler.config.desired import canonical_json
from reconciler.config.secrets import SecretRef, redact, redact_ref
from reconciler.state import schema as t
from reconciler.state.audit_latest import LatestSends
from reconciler.state.base import AuditDirection, AuditEntry, AuditStatus
from reconciler.state.codec import SECRET_FIELDS, from_row
from reconciler.state.delivery_events import queue_events
from reconciler.state.driver import DriverStatement

MAX_REASON = 2000  # a whole SMTP transcript is not a reason; keep rows small
MASK = "***"

_URL_PASSWORD = re.compile(r"(?P<pre>\b[a-z][a-z0-9+.-]*://[^\s:/@]*):[^\s@/]*@", re.I)
_AUTH_ARGUMENT = re.compile(
    r"(?P<pre>\bAUTH\s+(?:PLAIN|LOGIN|XOAUTH2|OAUTHBEARER|CRAM-MD5))\s+\S+", re.I
)
_BEARER = re.compile(r"(?P<pre>\bBearer)\s+[A-Za-z0-9._~+/=-]+", re.I)
_ASSIGNMENT = re.compile(
    r"(?P<pre>\b(?:password|passwd|pwd|client[_-]?secret|secret|access[_-]?token|"
    r"refresh[_-]?token|token|api[_-]?key|private[_-]?key)[\"']?\s*[:=]\s*)"
    r"(?:\"[^\"]*\"|'[^']*'|[^\s,;&}]+)",
    re.I,
)
_ENCRYPTED = re.compile(r"enc:v1:[A-Za-z0-9_\-]+=*")
_SECRET_KEYS = frozenset(k.lower() for k in SECRET_FIELDS)
# Every pattern above needs one of these words: text without any (every audit
# reason, host and server reply goes through here, most with nothing to mask)
# skips the five scans.
_HINTS = ("enc:v1:", "://", "auth", "bearer", "pass", "pwd", "secret", "token", "key")


def redact_text(text: str) -> str:
    """Free text with every credential shape we know of masked."""
    lowered = text.lower()
    if not any(hint in lowered for hint in _HINTS):
        return text
    text = _ENCRYPTED.sub(lambda m: redact_ref(m.group(0)), text)
    text = _URL_PASSWORD.sub(rf"\g<pre>:{MASK}@", text)
    text = _AUTH_ARGUMENT.sub(rf"\g<pre> {MASK}", text)
    text = _BEARER.sub(rf"\g<pre> {MASK}", text)
    return _ASSIGNMENT.sub(rf"\g<pre>{MASK}", text)


def redact_details(value: Any) -> Any:
    """JSON-like details with secret references printable and literal secrets masked."""
    return _mask(value)


def _mask(value: Any) -> Any:
    # One walk (every audit row's details come through here): references are made
    # printable where they are found, everything else is masked or redacted.
    if _is_reference(value):
        return redact(value)
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if str(key).lower() in _SECRET_KEYS and not _is_reference(item):
                out[str(key)] = MASK if item is not None else None
            else:
                out[str(key)] = _mask(item)
        return out
    if isinstance(value, list | tuple):
        return [_mask(v) for v in value]
    if isinstance(value, str):
        return redact_text(value)
    return value


def _is_reference(value: Any) -> bool:
    return isinstance(value, SecretRef) or (
        isinstance(value, Mapping) and len(value) == 1 and "secretRef" in value)


def clipped(text: str) -> str:
    """Free text for a stored reason or error: redacted and cut to ``MAX_REASON``."""
    text = redact_text(text)
    return text if len(text) <= MAX_REASON else text[: MAX_REASON - 1] + "…"


def recipient_key(address: str) -> str:
    return address.strip().lower()


def entry_row(entry: AuditEntry, now: datetime) -> dict[str, Any]:
    status = AuditStatus(entry.status)
    return {
        "created_at": entry.created_at or now,
        "direction": status.direction.value,
        "status": status.value,
        "reason": clipped(entry.reason),
        "namespace": entry.namespace,
        "server": entry.server,
        "host": redact_text(entry.host) if entry.host is not None else None,
        "attempt": entry.attempt,
        "recipient": entry.recipient,
        "recipient_key": recipient_key(entry.recipient) if entry.recipient is not None else None,
        "message_id": entry.message_id,
        "outbox_id": entry.outbox_id,
        "module": entry.module,
        "details": (canonical_json(redact_details(dict(entry.details)))
                    if entry.details is not None else None),
    }


_ROW_KEYS = tuple(c.key for c in t.audit.c if c.key != "id")
_INSERTS: dict[str, DriverStatement] = {}  # per dialect: a row per recipient per attempt


def insert_entries(conn: Connection, entries: Sequence[AuditEntry], now: datetime, *,
                   events: bool = False) -> None:
    """Write audit rows inside a caller's transaction (the outbox's group commit); with
    ``events``, queue the delivery events of those that end a recipient's story too."""
    if not entries:
        return
    if events:
        queue_events(conn, [replace(e, reason=clipped(e.reason), details=redact_details(
            e.details) if e.details is not None else None) for e in entries], now)
    statement = _INSERTS.get(conn.dialect.name)
    if statement is None:
        statement = DriverStatement(insert(t.audit), conn.dialect, _ROW_KEYS)
        _INSERTS[conn.dialect.name] = statement
    statement.execute_many(conn, (entry_row(e, now) for e in entries))


def _entry(row: Any) -> AuditEntry:
    details = json.loads(row.details) if row.details is not None else None
    return from_row(AuditEntry, row, status=AuditStatus(row.status), details=details)


def _where(
    *,
    status: AuditStatus | str | Sequence[AuditStatus | str] | None = None,
    recipient: str | None = None,
    server: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    direction: AuditDirection | str | None = None,
    namespace: str | None = None,
    namespaces: Collection[str] | None = None,
    outbox_id: int | None = None,
    message_id: str | None = None,
) -> list[ColumnElement[bool]]:
    c = t.audit.c
    out: list[ColumnElement[bool]] = []
    if status is not None:
        statuses = [status] if isinstance(status, str) else status
        # AuditStatus(s): an unknown status is a caller error, not an empty result
        out.append(c.status.in_([AuditStatus(s).value for s in statuses]))
    if recipient is not None:
        out.append(c.recipient_key == recipient_key(recipient))
    if server is not None:
        out.append(c.server == server)
    if since is not None:
        out.append(c.created_at >= since)
    if until is not None:
        out.append(c.created_at <= until)
    if direction is not None:
        out.append(c.direction == AuditDirection(direction).value)
    if namespace is not None:
        out.append(c.namespace == namespace)
    if namespaces is not None:  # a caller limited to these namespaces (SPEC S3)
        out.append(c.namespace.in_(sorted(namespaces)))
    if outbox_id is not None:
        out.append(c.outbox_id == outbox_id)
    if message_id is not None:
        # Message-IDs are quoted with or without their angle brackets; take either.
        bare = message_id.strip().strip("<>")
        out.append(or_(c.message_id == bare, c.message_id == f"<{bare}>"))
    return out


class SqlAudit(LatestSends):
    """Reached as ``store.audit``; the last send per server is :class:`LatestSends`."""

    def record(self, entries: Sequence[AuditEntry]) -> None:
        """Append entries in one transaction."""
        if not entries:
            return
        with self._write() as conn:
            insert_entries(conn, entries, datetime.now(UTC), events=self.delivery_events)

    def search(self, *, limit: int | None = 100, offset: int = 0,
               **filters: Any) -> list[AuditEntry]:
        """Matching entries, newest first. The filters are :func:`_where`'s (the
        ``Audit`` contract lists them); ``since``/``until`` are inclusive and
        ``recipient`` matches the whole address, case-insensitively."""
        q = select(t.audit).where(*_where(**filters))
        q = q.order_by(t.audit.c.created_at.desc(), t.audit.c.id.desc()).offset(offset)
        if limit is not None:
            q = q.limit(limit)
        with self._read() as conn:
            return [_entry(r) for r in conn.execute(q)]

    def page(self, *, before: int | None = None, limit: int = 50,
             namespaces: Sequence[str] | None = None, **filters: Any) -> list[AuditEntry]:
        """Up to ``limit`` matching entries with ``id < before``, newest id first.

        Keyset paging (the console, its CSV export): each page is an index walk
        that stops after ``limit`` rows, however deep into the audit it is, where
        ``search``'s offset would count every skipped row. ``namespaces`` limits
        the rows to those (a namespace-scoped reader); ``None`` means all.
        """
        c = t.audit.c
        q = select(t.audit).where(*_where(**filters))
        if before is not None:
            q = q.where(c.id < before)
        if namespaces is not None:
            scoped = sorted(set(namespaces))
            if not scoped:
                return []
            # One newest-first walk of the (namespace, id) index per namespace, then the
            # newest ``limit`` of those: "namespace IN (...) ORDER BY id" would sort
            # every row of those namespaces first.
            walks = [select(q.where(c.namespace == ns).order_by(c.id.desc()).limit(limit)
                            .subquery()) for ns in scoped]
            merged = union_all(*walks).subquery() if len(walks) > 1 else walks[0].subquery()
            q = select(merged).order_by(merged.c.id.desc()).limit(limit)
        else:
            q = q.order_by(c.id.desc()).limit(limit)
        with self._read() as conn:
            return [_entry(r) for r in conn.execute(q)]

    def count(self, **filters: Any) -> int:
        """How many entries :meth:`search` would find with these filters (no paging)."""
        q = select(func.count()).select_from(t.audit).where(*_where(**filters))
        with self._read() as conn:
            return conn.execute(q).scalar_one()

    def purge(self, before: datetime) -> int:
        """Delete entries older than ``before`` (retention); return how many."""
        with self._write() as conn:
            return conn.execute(delete(t.audit).where(t.audit.c.created_at < before)).rowcount
