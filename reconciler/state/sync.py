"""``store.sync``: the continuous sync's state row (contract: ``state.contract.SyncStates``)."""

from __future__ import annotations

from dataclasses import asdict, fields, replace
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import insert, select, update

from reconciler.state import schema as t
from reconciler.state.contract import SyncPhase, SyncRecord
from reconciler.state.location import StoreArea

MAX_REASON = 4000  # a Failed reason lists file:line errors; keep the row bounded
_FIELDS = {f.name for f in fields(SyncRecord)}


class SqlSync(StoreArea):
    def get(self) -> SyncRecord:
        with self._read() as conn:
            row = conn.execute(select(t.sync_state).where(t.sync_state.c.id == 1)).first()
        return _record(row._mapping) if row is not None else SyncRecord()

    def update(self, **changes: Any) -> SyncRecord:
        unknown = set(changes) - _FIELDS
        if unknown:
            raise TypeError(f"unknown sync state fields: {sorted(unknown)}")
        with self._write() as conn:
            row = conn.execute(select(t.sync_state).where(t.sync_state.c.id == 1)).first()
            current = _record(row._mapping) if row is not None else SyncRecord()
            new = replace(current, **changes, updated_at=datetime.now(UTC))
            values = asdict(new)
            values["phase"] = new.phase.value
            values["reason"] = new.reason[:MAX_REASON]
            if row is None:
                conn.execute(insert(t.sync_state).values(id=1, **values))
            else:
                conn.execute(update(t.sync_state).where(t.sync_state.c.id == 1).values(**values))
        return new


def _record(row: Any) -> SyncRecord:
    data = {name: row[name] for name in _FIELDS}
    data["phase"] = SyncPhase(data["phase"])
    return SyncRecord(**data)
