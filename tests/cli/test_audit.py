"""`reconcile audit` (SPEC O8): the email audit searched from the command line,
on SQLite and PostgreSQL stores."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from reconciler.cli.common import parse_time
from reconciler.state import SqlStore
from reconciler.state.base import AuditEntry, AuditStatus

from .helpers_history import assert_user_error, run

T0 = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


@pytest.fixture
def seeded(store: SqlStore, store_url: str) -> str:
    store.audit.record([
        AuditEntry(AuditStatus.SENT, "250 2.0.0 OK queued", server="gmail",
                   host="smtp.gmail.com:587", attempt=1, recipient="Jane@Example.com",
                   message_id="<m1@desk.example>", outbox_id=1, module="requests",
                   created_at=at(0)),
        AuditEntry(AuditStatus.SEND_IGNORED, "recipient filter corp-only", server="gmail",
                   recipient="mallory@outside.example", outbox_id=1, created_at=at(1)),
        AuditEntry(AuditStatus.RETRYING, "421 4.7.0 try\nlater", server="o365", attempt=1,
                   host="smtp.office365.com:587", recipient="jane@example.com", outbox_id=2,
                   created_at=at(2)),
        AuditEntry(AuditStatus.SEND_FAILED, "recipients list is empty", namespace="acme",
                   outbox_id=3, created_at=at(3)),
        AuditEntry(AuditStatus.SENT, "250 OK", server="o365", attempt=2,
                   host="smtp.office365.com:587", recipient="jane@example.com",
                   message_id="<m2@desk.example>", outbox_id=2, created_at=at(4)),
        AuditEntry(AuditStatus.RECEIVED, "fetched", server="imap-desk",
                   recipient="desk@example.com", created_at=at(5)),
    ])
    return store_url


def reasons(*args: str, store: str) -> list[str]:
    out = run("audit", "--store", store, "--format", "json", *args).stdout
    return [e["reason"] for e in json.loads(out)]


def test_table_lists_newest_first_with_every_column(seeded: str) -> None:
    header, *lines = run("audit", "--store", seeded).stdout.splitlines()
    assert header.split() == ["TIME", "STATUS", "SERVER", "HOST", "ATTEMPT", "RECIPIENT",
                              "MESSAGE-ID", "REASON"]
    assert len(lines) == 6
    assert lines[0].startswith("2024-06-01 12:05:00 UTC  RECEIVED")
    oldest = lines[-1].split()
    assert oldest[:11] == ["2024-06-01", "12:00:00", "UTC", "SENT", "gmail",
                           "smtp.gmail.com:587", "1", "Jane@Example.com", "<m1@desk.example>",
                           "250", "2.0.0"]
    assert lines[-1].endswith("250 2.0.0 OK queued")
    # a multi-line server reply stays on its row
    assert any(line.endswith("421 4.7.0 try later") for line in lines)
    # empty cells are "-" so columns stay aligned for `awk`/`cut`
    failed = next(line for line in lines if "SEND_FAILED" in line).split()
    assert failed[4:9] == ["-", "-", "-", "-", "-"]


@pytest.mark.parametrize(("args", "expected"), [
    (("--status", "SENT"), ["250 OK", "250 2.0.0 OK queued"]),
    (("--status", "retrying", "--status", "SEND_FAILED"),
     ["recipients list is empty", "421 4.7.0 try\nlater"]),
    (("--recipient", "JANE@example.COM"), ["250 OK", "421 4.7.0 try\nlater",
                                           "250 2.0.0 OK queued"]),
    (("--server", "gmail"), ["recipient filter corp-only", "250 2.0.0 OK queued"]),
    (("--since", "2024-06-01T12:02:00Z", "--until", "2024-06-01T12:03:00+00:00"),
     ["recipients list is empty", "421 4.7.0 try\nlater"]),
    (("--until", "2024-06-01T12:00:00"), ["250 2.0.0 OK queued"]),  # no zone: UTC
    (("--direction", "incoming"), ["fetched"]),
    (("--namespace", "acme"), ["recipients list is empty"]),
    (("--outbox-id", "2"), ["250 OK", "421 4.7.0 try\nlater"]),
    (("--message-id", "m2@desk.example"), ["250 OK"]),
    (("--limit", "2"), ["fetched", "250 OK"]),
    (("--limit", "1", "--offset", "2"), ["recipients list is empty"]),
], ids=["status", "statuses", "recipient", "server", "since-until", "naive-until",
        "direction", "namespace", "outbox-id", "message-id", "limit", "offset"])
def test_filters(seeded: str, args: tuple[str, ...], expected: list[str]) -> None:
    assert reasons(*args, store=seeded) == expected


def test_a_bare_date_as_until_covers_the_whole_day(seeded: str) -> None:
    assert len(reasons("--since", "2024-06-01", "--until", "2024-06-01", store=seeded)) == 6
    assert reasons("--until", "2024-05-31", store=seeded) == []


def test_json_has_the_api_shape(seeded: str) -> None:
    out = run("audit", "--store", seeded, "--format", "json", "--outbox-id", "2",
              "--limit", "1").stdout
    assert json.loads(out) == [{
        "id": json.loads(out)[0]["id"], "time": "2024-06-01T12:04:00Z", "status": "SENT",
        "direction": "outgoing", "reason": "250 OK", "namespace": "default", "server": "o365",
        "host": "smtp.office365.com:587", "attempt": 2, "recipient": "jane@example.com",
        "messageId": "<m2@desk.example>", "outboxId": 2, "module": None, "details": None,
    }]


def test_no_match_says_so_on_stderr_and_exits_0(seeded: str) -> None:
    result = run("audit", "--store", seeded, "--server", "nowhere")
    assert result.stdout == ""
    assert "no audit entries match" in result.stderr
    assert run("audit", "--store", seeded, "--server", "nowhere", "--format",
               "json").stdout.strip() == "[]"


@pytest.mark.parametrize(("args", "words"), [
    (("--status", "DELIVERED"), "--status"),
    (("--direction", "sideways"), "--direction"),
    (("--since", "last tuesday"), "not an ISO date"),
    (("--limit", "0"), "--limit"),
])
def test_bad_options_are_usage_errors(seeded: str, args: tuple[str, ...], words: str) -> None:
    result = run("audit", "--store", seeded, *args, code=2)
    assert words in result.output


def test_missing_sqlite_store_is_one_plain_error(tmp_path: Path) -> None:
    result = run("audit", "--store", tmp_path / "nowhere.db", code=None)
    assert_user_error(result, "no state store at")
    assert not (tmp_path / "nowhere.db").exists()


def test_relative_ages() -> None:
    now = datetime(2024, 6, 2, 0, 0, tzinfo=UTC)
    assert parse_time("90m", end_of_day=False, now=now) == now - timedelta(minutes=90)
    assert parse_time("2h", end_of_day=False, now=now) == now - timedelta(hours=2)
    assert parse_time("7d", end_of_day=True, now=now) == now - timedelta(days=7)
    assert parse_time("1w", end_of_day=False, now=now) == now - timedelta(weeks=1)


def test_since_an_age_finds_recent_entries(store: SqlStore, store_url: str) -> None:
    now = datetime.now(UTC)
    store.audit.record([
        AuditEntry(AuditStatus.SENT, "recent", created_at=now - timedelta(minutes=5)),
        AuditEntry(AuditStatus.SENT, "old", created_at=now - timedelta(days=3)),
    ])
    assert reasons("--since", "1h", store=store_url) == ["recent"]
