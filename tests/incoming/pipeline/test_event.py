"""TicketEvent JSON: every event the corpus produces validates against the published schema."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import orjson
import pytest
from jsonschema import Draft202012Validator, FormatChecker

from reconciler.incoming.pipeline.event import EVENT_SCHEMA, EVENT_VERSION
from reconciler.incoming.pipeline.run import process

from .kit import MAIL, context

SCHEMA_FILE = MAIL.parents[2] / "schemas" / "events" / "ticket-event.json"
VALIDATOR = Draft202012Validator(json.loads(SCHEMA_FILE.read_text(encoding="utf-8")),
                                 format_checker=FormatChecker())


def events() -> list[tuple[str, bytes]]:
    out = []
    for settings in ({}, {"createFromCc": True, "createFromBcc": True, "guestTickets": True}):
        ctx = context(settings=_settings(settings))
        for path in sorted(MAIL.glob("*.eml")):
            result = process(path.read_bytes(), ctx,
                             received_at=datetime(2025, 3, 4, 8, 16, tzinfo=UTC))
            if result.event is not None:
                out.append((path.name, result.event.to_json()))
    return out


def _settings(extra: dict[str, object]) -> dict[str, object]:
    from .kit import settings_spec

    return settings_spec(**extra)


EVENTS = events()


def test_schema_is_a_valid_json_schema() -> None:
    Draft202012Validator.check_schema(VALIDATOR.schema)
    assert VALIDATOR.schema["$id"] == EVENT_SCHEMA


@pytest.mark.parametrize(("name", "data"), EVENTS, ids=[n for n, _ in EVENTS])
def test_event_matches_schema(name: str, data: bytes) -> None:
    document = orjson.loads(data)
    errors = sorted(VALIDATOR.iter_errors(document), key=lambda e: list(e.path))
    assert not errors, [f"{list(e.path)}: {e.message}" for e in errors]
    assert document["version"] == EVENT_VERSION


def test_kinds_covered_and_json_is_stable() -> None:
    kinds = {orjson.loads(data)["kind"] for _, data in EVENTS}
    assert kinds == {"create", "reply", "command"}
    for _, data in EVENTS:
        assert orjson.dumps(orjson.loads(data), option=orjson.OPT_SORT_KEYS) == data


def test_schema_rejects_an_event_that_breaks_it() -> None:
    document = orjson.loads(EVENTS[0][1])
    document["kind"] = "reply"  # a reply must name its ticket
    assert not VALIDATOR.is_valid(document)
    document = orjson.loads(EVENTS[0][1])
    document["attachments"] = [{"name": "a.pdf", "contentType": "application/pdf", "size": 0,
                                "sha256": "0" * 64, "inline": False, "contentId": None}]
    assert not VALIDATOR.is_valid(document)


def test_times_are_utc_iso() -> None:
    document = orjson.loads(dict(EVENTS)["01-new-request-plain.eml"])
    assert document["receivedAt"] == "2025-03-04T08:16:00Z"
    assert document["sentAt"] == "2025-03-04T08:15:02Z"
