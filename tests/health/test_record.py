"""health.record.read: a status row it cannot understand reads as no record, with a note."""

from __future__ import annotations

from typing import Any

import pytest

from reconciler.health import record as rec

GOOD = {"state": "Reachable", "lastChecked": "2026-05-01T10:00:00+00:00",
        "lastChange": "2026-05-01T10:00:00+00:00"}


@pytest.mark.parametrize("health", [
    {**GOOD, "hosts": ["main", "alternate"]},  # a list where a mapping belongs
    {**GOOD, "hosts": {"main": "down"}},  # a host that is a string
    {**GOOD, "lastChecked": "yesterday"},
    {"state": "Reachable"},  # fields missing
    "Reachable",  # not a mapping at all
])
def test_an_unreadable_record_is_none_with_a_note(health: Any) -> None:
    status = {"health": health, "tokenExpiry": "kept"}
    assert rec.read(status) is None
    note = rec.unreadable(status)
    assert note is not None and "cannot be read" in note and "state is unknown" in note


def test_a_good_or_absent_record_has_no_note() -> None:
    assert rec.read({"health": GOOD}) is not None and rec.unreadable({"health": GOOD}) is None
    assert rec.read({}) is None and rec.unreadable({}) is None
