"""Sync windows: when automatic applies may run (SPEC X5, issue 13 item 2).

A window opens at each time its cron schedule fires, in its IANA time zone, and
stays open for its duration. The rules are Argo CD's: any active ``deny``
window holds the sync; when ``allow`` windows exist, one of them must be
active; with no windows at all syncs always run.

Functions (plain data in and out, no SyncPolicy model needed):

- ``parse_window(kind, schedule, duration, time_zone="UTC") -> SyncWindow``:
  checks one window and raises :class:`WindowError` (a ``ValueError``) that
  names the field, says what is wrong and how to write it. The checks are
  ``config.schedule``'s, which the SyncPolicy model's validators call too.
- ``window_verdict(windows, now) -> WindowVerdict(open, reason, next_open)``:
  ``next_open`` is when a held sync may run (None when open, or when no
  window opens within a year).

Starts are cron fire times in local time, so ``0 9 * * 1-5`` is 09:00 in
New York in winter and in summer alike; durations are elapsed time, so a
window spanning a DST change lasts what it says. croniter places a start
that falls in a DST gap at the first valid local time after it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import TypeVar
from zoneinfo import ZoneInfo

from croniter import CroniterError, croniter

from reconciler.config.schedule import cron_schedule, parse_duration
from reconciler.config.schedule import time_zone as zone_name

_T = TypeVar("_T")
_TINY = timedelta(microseconds=1)  # croniter's get_prev is strict: a start at `now` counts
_HORIZON = timedelta(days=366)
_MAX_STEPS = 2000  # boundaries looked at for next_open: enough for minutely windows' hour


class WindowError(ValueError):
    """A window that cannot be used; the message names the field and the fix."""


class WindowKind(StrEnum):
    ALLOW = "allow"
    DENY = "deny"


@dataclass(frozen=True, slots=True)
class SyncWindow:
    kind: WindowKind
    schedule: str  # five-field cron, e.g. "0 22 * * 1-5"
    duration: timedelta
    time_zone: str = "UTC"

    def describe(self) -> str:
        return f"{self.kind.value} window '{self.schedule}' ({self.time_zone}, {self.duration})"

    def active_until(self, now: datetime) -> datetime | None:
        """The end of the window's opening that covers ``now``; None when it is shut."""
        local = now.astimezone(ZoneInfo(self.time_zone)) + _TINY
        start: datetime = croniter(self.schedule, local).get_prev(datetime)
        end = start.astimezone(UTC) + self.duration
        return end if end > now else None

    def next_start(self, after: datetime) -> datetime:
        local = after.astimezone(ZoneInfo(self.time_zone))
        start: datetime = croniter(self.schedule, local).get_next(datetime)
        return start.astimezone(UTC)


@dataclass(frozen=True, slots=True)
class WindowVerdict:
    open: bool
    reason: str
    next_open: datetime | None = None


def parse_window(kind: str, schedule: str, duration: str | timedelta,
                 time_zone: str = "UTC") -> SyncWindow:
    span = duration if isinstance(duration, timedelta) else _field(
        "duration", parse_duration, duration)
    return SyncWindow(_field("kind", _kind, kind), _field("schedule", cron_schedule, schedule),
                      span, _field("timeZone", zone_name, time_zone))


def _kind(value: str) -> WindowKind:
    if value not in {k.value for k in WindowKind}:
        raise ValueError(f"'{value}' is not a window kind; write 'allow' or 'deny'")
    return WindowKind(value)


def _field(name: str, check: Callable[[str], _T], value: str) -> _T:
    try:
        return check(value)
    except ValueError as exc:
        raise WindowError(f"{name}: {exc}") from None


def window_verdict(windows: Sequence[SyncWindow], now: datetime) -> WindowVerdict:
    """Whether an automatic sync may run at ``now`` (aware), why, and if not, when."""
    verdict = _at(windows, now)
    if verdict.open:
        return verdict
    return WindowVerdict(False, verdict.reason, _next_open(windows, now))


def _at(windows: Sequence[SyncWindow], now: datetime) -> WindowVerdict:
    try:
        for window in windows:
            if window.kind is WindowKind.DENY and (end := window.active_until(now)):
                return WindowVerdict(False, f"held by the {window.describe()} until "
                                            f"{end.isoformat()}")
        allows = [w for w in windows if w.kind is WindowKind.ALLOW]
        if not allows:
            return WindowVerdict(True, "no window holds syncs")
        for window in allows:
            if window.active_until(now):
                return WindowVerdict(True, f"inside the {window.describe()}")
    except CroniterError as exc:  # parse_window lets no such schedule through
        return WindowVerdict(False, f"a sync window cannot be evaluated: {exc}")
    return WindowVerdict(False, "outside every allow window")


def _next_open(windows: Sequence[SyncWindow], now: datetime) -> datetime | None:
    """The first window boundary after ``now`` at which the verdict is open."""
    t = now
    for _ in range(_MAX_STEPS):
        boundaries = [w.next_start(t) for w in windows]
        boundaries += [end for w in windows if (end := w.active_until(t))]
        t = min(b for b in boundaries if b > t)
        if t - now > _HORIZON:
            return None
        if _at(windows, t).open:
            return t
    return None
