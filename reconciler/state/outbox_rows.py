"""Outbox rows and the messages they are: a notification becomes its row and its
attachment rows (enqueue); a row becomes an :class:`OutboxMessage` (claim, get, find)."""

from __future__ import annotations

import base64
import binascii
from collections import namedtuple
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson
from pydantic import BaseModel
from sqlalchemy import (
    Connection,
    Integer,
    String,
    bindparam,
    case,
    cast,
    func,
    null,
    or_,
    select,
    update,
)

from reconciler.config.desired import canonical_json
from reconciler.state import schema as t
from reconciler.state.base import (
    AttachmentInfo,
    EnqueueRequest,
    NotificationLike,
    OutboxMessage,
    OutboxState,
    RoutingSnapshot,
)
from reconciler.state.codec import from_row

o = t.outbox
att = t.outbox_attachments
CHUNK = 500  # ids per IN (...)
Row = namedtuple("Row", [c.key for c in o.c])  # type: ignore[misc]  # a claimed row


# -- payload: the notification without its attachment bytes ---------------------


def as_payload(notification: NotificationLike) -> dict[str, Any]:
    """A plain dict of the notification (a pydantic model is dumped by alias)."""
    if isinstance(notification, Mapping):
        return dict(notification)
    if not isinstance(notification, BaseModel):
        raise TypeError("enqueue takes a notification dict (or a pydantic model)")
    return notification.model_dump(by_alias=True)


def _attachment_bytes(data: Any, position: int) -> bytes:
    if isinstance(data, bytes | bytearray | memoryview):
        return bytes(data)
    if isinstance(data, str):
        # JSON intake sends base64; pydantic writes the URL-safe alphabet.
        text = "".join(data.split()).replace("-", "+").replace("_", "/")
        try:
            return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
        except (binascii.Error, ValueError):
            pass
    raise ValueError(f"attachment {position}: data must be bytes or base64 text")


def split_attachments(payload: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(payload with attachment entries minus ``data``, attachment rows)."""
    items = payload.get("attachments") or []
    if not items:
        return payload, []
    described, rows = [], []
    for position, item in enumerate(items):
        if not isinstance(item, Mapping) or "data" not in item:
            raise ValueError(f"attachment {position}: expected an object with name and data")
        data = _attachment_bytes(item["data"], position)
        rest = {k: v for k, v in item.items() if k != "data"}
        described.append(rest)
        rows.append({
            "position": position,
            "name": str(rest.get("name", "")),
            "content_type": str(rest.get("contentType") or rest.get("content_type")
                                or "application/octet-stream"),
            "size": len(data),
            "data": data,
        })
    return {**payload, "attachments": described}, rows


# -- rows to messages ---------------------------------------------------------------


def _message(row: Any, files: Sequence[AttachmentInfo]) -> OutboxMessage:
    routing = (RoutingSnapshot(row.config_revision, row.server)
               if row.config_revision is not None else None)
    return from_row(OutboxMessage, row, payload=orjson.loads(row.payload),
                    attachments=tuple(files), routing=routing, state=OutboxState(row.state),
                    decision=orjson.loads(row.decision) if row.decision else None)


def _attachment_infos(conn: Connection, ids: Sequence[int]) -> dict[int, list[AttachmentInfo]]:
    out: dict[int, list[AttachmentInfo]] = {}
    for i in range(0, len(ids), CHUNK):
        q = (select(att.c.message_id, att.c.position, att.c.name, att.c.content_type,
                    att.c.size)
             .where(att.c.message_id.in_(ids[i : i + CHUNK]))
             .order_by(att.c.message_id, att.c.position))
        for message_id, position, name, content_type, size in conn.execute(q):
            out.setdefault(message_id, []).append(
                AttachmentInfo(position, name, content_type, size))
    return out


def messages(conn: Connection, rows: Iterable[Any]) -> list[OutboxMessage]:
    rows = sorted(rows, key=lambda r: (r.next_attempt_at, r.id))
    files = _attachment_infos(conn, [r.id for r in rows])
    return [_message(r, files.get(r.id, ())) for r in rows]


# What an enqueue writes: every column but the ones the database fills or a result sets.
ROW_KEYS = tuple(c.key for c in o.c if c.key not in ("id", "last_error", "decision"))



@dataclass(frozen=True, slots=True)
class Prepared:
    """An enqueue request as its outbox row and attachment rows."""

    row: dict[str, Any]
    files: list[dict[str, Any]]

    @classmethod
    def of(cls, request: EnqueueRequest, now: datetime) -> Prepared:
        if not request.namespace:
            raise ValueError("namespace is empty")
        if request.idempotency_key is not None and not 0 < len(request.idempotency_key) <= 200:
            raise ValueError("idempotency key must be 1-200 characters")
        payload, files = split_attachments(as_payload(request.notification))
        module = payload.get("module")
        routing, lease = request.routing, request.lease
        row = {
            "namespace": request.namespace,
            "idempotency_key": request.idempotency_key,
            "module": str(module)[:64] if module is not None else None,
            "payload": canonical_json(payload),
            "config_revision": routing.config_revision if routing else None,
            "server": routing.server if routing else None,
            "state": OutboxState.QUEUED.value,
            "attempts": 0,
            "next_attempt_at": now,
            "first_attempt_at": None,
            "lease_owner": None,
            "lease_expires_at": None,
            "created_at": now,
            "updated_at": now,
        }
        if lease is not None:
            # Exactly what a claim would have written: release() and lease
            # expiry treat it like any claimed message.
            row.update(state=OutboxState.LEASED.value, attempts=1, first_attempt_at=now,
                       lease_owner=lease.owner,
                       lease_expires_at=now + timedelta(seconds=lease.seconds))
        return cls(row, files)

    def leased(self, id: int) -> OutboxMessage | None:
        """The stored message, for its lease holder, without reading it back."""
        if self.row["lease_owner"] is None:
            return None
        files = [AttachmentInfo(f["position"], f["name"], f["content_type"], f["size"])
                 for f in self.files]
        # As a claim would read it back: JSON types only, whatever the caller passed.
        return _message(Row(id=id, last_error=None, decision=None, **self.row), files)


COMPLETE_KEYS = ("b_id", "b_owner", "b_leased", "b_state", "b_error", "b_next", "b_now",
                  "b_rev", "b_server", "b_decision")


def complete_statement() -> Any:
    """One leased message's result, fenced by its lease; RETURNING id when it was held.

    A route (revision and server, set together) is recorded only for a message that
    has none yet and only when one is given; the decision's trace likewise (O13)."""
    rev = cast(bindparam("b_rev", type_=Integer()), Integer())
    keep_route = or_(o.c.config_revision.is_not(None), rev.is_(None))
    return (
        update(o)
        .where(o.c.id == bindparam("b_id", type_=Integer()),
               o.c.lease_owner == bindparam("b_owner", type_=String()),
               o.c.state == bindparam("b_leased", type_=String()))
        .values(state=bindparam("b_state", type_=String()),
                last_error=bindparam("b_error", type_=o.c.last_error.type),
                next_attempt_at=func.coalesce(bindparam("b_next", type_=t.UtcDateTime()),
                                              o.c.next_attempt_at),
                lease_owner=null(), lease_expires_at=null(),
                updated_at=bindparam("b_now", type_=t.UtcDateTime()),
                config_revision=case((keep_route, o.c.config_revision), else_=rev),
                server=case((keep_route, o.c.server),
                            else_=bindparam("b_server", type_=String())),
                decision=func.coalesce(o.c.decision,
                                       bindparam("b_decision", type_=o.c.decision.type)))
        .returning(o.c.id)
    )


def route_values(rev: int | None, server: str | None,
                  decision: str | None) -> dict[str, Any]:
    """A message routed afresh on its last attempt keeps that route and why (O13); one
    routed earlier keeps the earlier one (both columns are set together or not at all)."""
    if rev is None and decision is None:
        return {}
    kept = o.c.config_revision.is_not(None)
    values: dict[str, Any] = {"decision": func.coalesce(o.c.decision, decision)}
    if rev is not None:
        values["config_revision"] = case((kept, o.c.config_revision), else_=rev)
        values["server"] = case((kept, o.c.server), else_=server)
    return values
