"""Hot statements compiled once and handed to the driver as SQL text.

The outbox writes a row per accepted notification and an audit row per
recipient. Through SQLAlchemy Core every such execute pays for the statement's
cache key, parameter construction and result metadata: ~85% of the CPU of an
outbox insert in ``bench/dispatch.py``, more than SQLite's own work. A
:class:`DriverStatement` does that part once: the Core statement is compiled
for the engine's dialect when the store opens, each parameter keeps its
column type's bind processor (so values are stored exactly as Core would
store them, and read back the same), and executions go to a DBAPI cursor of
the Core connection, inside its transaction. Driver errors are raised as Core
would raise them (``DBAPIError``, so ``location.translated`` explains them) and
a lost connection is invalidated, as Core does. ``Connection.exec_driver_sql``
would do the same at about four times the cost.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import ColumnElement, Connection, Dialect, Insert
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql.expression import Executable

_Processor = Callable[[Any], Any] | None


class DriverStatement:
    """``statement`` compiled for ``dialect`` with the given parameter names."""

    def __init__(self, statement: Executable, dialect: Dialect, keys: Sequence[str],
                 returns: Sequence[ColumnElement[Any]] = ()) -> None:
        # An INSERT takes its columns from the keys; other statements name their binds.
        columns = list(keys) if isinstance(statement, Insert) else None
        compiled = statement.compile(dialect=dialect, column_keys=columns)
        self.sql = compiled.string
        binds = compiled.binds
        self._positional = bool(compiled.positional)
        names: Sequence[str] = (compiled.positiontup or []) if self._positional else list(binds)
        unknown = [n for n in names if n not in keys]
        if unknown:
            # A bind without a value of ours (a literal, a default) would silently be None.
            raise ValueError(f"statement needs parameters not given: {', '.join(unknown)}")
        self._params: list[tuple[str, _Processor]] = [
            (name, binds[name].type.dialect_impl(dialect).bind_processor(dialect))
            for name in names]
        self._keys = frozenset(keys)
        self._names = [name for name, _ in self._params]
        # What RETURNING gives back, turned into Python values as Core would.
        self._results: list[_Processor] = [
            column.type.dialect_impl(dialect).result_processor(dialect, None)
            for column in returns]

    def parameters(self, values: Mapping[str, Any]) -> tuple[Any, ...] | dict[str, Any]:
        """``values`` as the driver takes them: processed, in order or by name."""
        if len(values) != len(self._keys):
            # A value the statement was not compiled for would be dropped without a word.
            raise ValueError(f"parameters {sorted(set(values) ^ self._keys)} do not match "
                             "the compiled statement")
        out = []
        for name, process in self._params:
            value = values[name]
            out.append(value if process is None else process(value))
        if self._positional:
            return tuple(out)
        return dict(zip(self._names, out, strict=True))

    def execute(self, conn: Connection, values: Mapping[str, Any]) -> Any:
        """Run once; the first row of what it returns (RETURNING), or None."""
        return self._run(conn, self.parameters(values), many=False)

    def rows(self, conn: Connection, values: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        """Run once; every row it returns, each value processed by its ``returns`` type."""
        found = self._run(conn, self.parameters(values), many=False, fetch_all=True)
        processors = self._results
        return [tuple(value if process is None or value is None else process(value)
                      for process, value in zip(processors, row, strict=True))
                for row in found]

    def execute_many(self, conn: Connection, rows: Iterable[Mapping[str, Any]]) -> None:
        batch = [self.parameters(row) for row in rows]
        if batch:
            self._run(conn, batch, many=True)

    def _run(self, conn: Connection, params: Any, *, many: bool, fetch_all: bool = False
             ) -> Any:
        dialect = conn.dialect
        cursor = conn.connection.cursor()
        try:
            if many:
                cursor.executemany(self.sql, params)
                return None
            cursor.execute(self.sql, params)
            if fetch_all:
                return cursor.fetchall() if cursor.description else []
            return cursor.fetchone() if cursor.description else None
        except dialect.loaded_dbapi.Error as exc:
            lost = dialect.is_disconnect(exc, conn.connection.dbapi_connection, cursor)
            if lost:
                conn.invalidate(exc)
            # As Core would raise it: location.translated turns it into a StoreError.
            raise DBAPIError.instance(self.sql, params, exc, dialect.loaded_dbapi.Error,
                                      hide_parameters=True, connection_invalidated=lost,
                                      dialect=dialect, ismulti=many) from exc
        finally:
            cursor.close()
