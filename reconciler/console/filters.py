"""Query-string parsing shared by the console's list screens: a bad value becomes a
message on the page (which field, what was wrong, what to write), never a traceback."""

from __future__ import annotations

from datetime import UTC, datetime

from reconciler.runtime.access import Principal

PAGE = 50  # rows per page on every list screen


class BadFilter(ValueError):
    """One form field the screen cannot use; the text names the field and the fix."""


def text(value: str | None) -> str | None:
    value = (value or "").strip()
    return value or None


def moment(field: str, value: str | None) -> datetime | None:
    """A time from a ``datetime-local`` input (no zone: UTC) or full ISO 8601."""
    value = text(value)
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise BadFilter(f"{field}: {value!r} is not a time; write it as "
                        "2026-01-31T09:30 (UTC) or in ISO 8601 with a zone") from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed


def cursor(value: str | None) -> int | None:
    """The ``before`` of a keyset page; a mangled one restarts at the newest row."""
    value = text(value)
    return int(value) if value is not None and value.isdigit() else None


def scope(principal: Principal) -> list[str] | None:
    """The namespaces a query must stay within; None: all of them."""
    return None if principal.namespaces is None else sorted(principal.namespaces)
