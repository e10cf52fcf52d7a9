"""Schedules in config: five-field cron, IANA time zones and short durations.

The one check of each, shared by the SyncPolicy model (a bad value is a
positioned validation error: each raises ``ValueError`` with what is wrong
and the form to write) and by ``sync.windows``, which evaluates them.
"""

from __future__ import annotations

import re
from datetime import timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

_DURATION = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")


# croniter expands every field to check one (~0.2 ms); the same few schedules recur
# across the namespaces of a large repo
@lru_cache(maxsize=1024)
def _valid_cron(value: str) -> bool:
    # Imported here: croniter's import runs `file` on the interpreter (platform.architecture),
    # ~20 ms CPU and more wall of every process that loads the models, schedules or not.
    from croniter import croniter

    valid: bool = croniter.is_valid(value)
    return valid


def cron_schedule(value: str) -> str:
    """The schedule with its fields single-spaced."""
    fields = value.split()
    if len(fields) != 5 or not _valid_cron(value):
        raise ValueError(f"'{value}' is not a five-field cron schedule (minute hour "
                         "day-of-month month day-of-week, e.g. '0 22 * * 1-5' for 22:00 on "
                         "weekdays)")
    return " ".join(fields)


def time_zone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"'{value}' is not an IANA time zone; write e.g. 'Europe/Berlin', "
                         "'America/New_York' or 'UTC'") from None
    return value


def parse_duration(value: str) -> timedelta:
    match = _DURATION.fullmatch(value.strip())
    if not value.strip() or match is None:
        raise ValueError(f"'{value}' is not a duration; write e.g. '90m', '1h30m' or '2d' "
                         "(d, h, m, s, largest first)")
    days, hours, minutes, seconds = (int(g or 0) for g in match.groups())
    span = timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)
    if not span:
        raise ValueError(f"'{value}' is zero: a window must stay open for a while")
    return span
