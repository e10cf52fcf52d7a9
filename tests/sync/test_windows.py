"""Sync windows: Argo CD's rules, in local time across DST, and clear errors."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from reconciler.sync.windows import WindowError, parse_window, window_verdict

BERLIN = ZoneInfo("Europe/Berlin")


def at(*args: int, tz: ZoneInfo | None = None) -> datetime:
    return datetime(*args, tzinfo=tz or UTC)  # type: ignore[misc]


def test_no_windows_always_open() -> None:
    verdict = window_verdict([], at(2026, 1, 1, 3))
    assert verdict.open and verdict.next_open is None


def test_deny_window_holds_and_says_when_it_opens() -> None:
    nights = parse_window("deny", "0 22 * * 1-5", "8h", "Europe/Berlin")
    held = window_verdict([nights], at(2026, 1, 13, 23, tz=BERLIN))  # a Tuesday
    assert not held.open
    assert "deny window '0 22 * * 1-5'" in held.reason and "until" in held.reason
    assert held.next_open == at(2026, 1, 14, 6, tz=BERLIN)
    assert window_verdict([nights], at(2026, 1, 14, 6, tz=BERLIN)).open  # the end is open
    assert window_verdict([nights], at(2026, 1, 17, 23, tz=BERLIN)).open  # Saturday


def test_allow_window_follows_local_time_through_dst() -> None:
    # 09:00 in New York is 14:00 UTC in January and 13:00 UTC in July.
    office = parse_window("allow", "0 9 * * 1-5", "2h", "America/New_York")
    assert window_verdict([office], at(2026, 1, 15, 14, 30)).open
    winter = window_verdict([office], at(2026, 1, 15, 13, 30))
    assert not winter.open and winter.reason == "outside every allow window"
    assert winter.next_open == at(2026, 1, 15, 14)
    assert window_verdict([office], at(2026, 7, 16, 13, 30)).open
    assert not window_verdict([office], at(2026, 7, 16, 15, 30)).open


def test_duration_is_elapsed_time_across_the_spring_gap() -> None:
    # 01:00 CET on 29 March 2026 + 3h ends at 05:00 CEST: clocks skip 02:00-03:00.
    deny = parse_window("deny", "0 1 * * *", "3h", "Europe/Berlin")
    held = window_verdict([deny], at(2026, 3, 29, 4, 30, tz=BERLIN))
    assert not held.open and held.next_open == at(2026, 3, 29, 5, tz=BERLIN)


def test_deny_beats_allow_and_next_open_skips_to_after_both() -> None:
    allow = parse_window("allow", "0 8 * * *", "10h")
    deny = parse_window("deny", "0 9 * * *", "1h30m")
    verdict = window_verdict([allow, deny], at(2026, 5, 4, 9, 15))
    assert not verdict.open and verdict.reason.startswith("held by the deny window")
    assert verdict.next_open == at(2026, 5, 4, 10, 30)
    late = window_verdict([allow, deny], at(2026, 5, 4, 19))
    assert late.next_open == at(2026, 5, 5, 8)


@pytest.mark.parametrize(("args", "says"), [
    (("deny", "0 25 * * *", "1h"), "schedule: '0 25 * * *' is not a five-field cron schedule"),
    (("deny", "0 1 * * * 5", "1h"), "(minute hour day-of-month month day-of-week"),
    (("deny", "0 1 * * *", "1h", "Mars/Olympus"), "timeZone: 'Mars/Olympus' is not an IANA"),
    (("deny", "0 1 * * *", "an hour"), "duration: 'an hour' is not a duration; write e.g."),
    (("deny", "0 1 * * *", "0m"), "duration: '0m' is zero"),
    (("block", "0 1 * * *", "1h"), "kind: 'block' is not a window kind; write 'allow' or"),
])
def test_bad_window_says_what_and_how(args: tuple[str, ...], says: str) -> None:
    with pytest.raises(WindowError) as caught:
        parse_window(*args)
    assert says in str(caught.value)


def test_durations() -> None:
    assert parse_window("allow", "0 1 * * *", "1d2h3m4s").duration == timedelta(
        days=1, hours=2, minutes=3, seconds=4)
