"""A server's health as kept in the store's status (SPEC O9, P7).

Status lives beside the spec, never in it, so it never shows as drift. Other
parts of the daemon may keep their own facts in the same status document
(counters, token expiry), so health owns exactly one key, ``health``, and
writes merge into what is there. The JSON shape (camelCase like the rest):

    {"health": {
        "state": "Reachable" | "Unreachable",
        "lastError": "tcp: connection refused by 10.0.0.5:587" | null,
        "failedStep": "tcp" | null,
        "hint": "Nothing accepts connections on ..." | null,
        "lastChecked": "2026-05-01T10:00:00+00:00",
        "lastChange": "2026-05-01T09:40:00+00:00",
        "activeHost": "main" | "alternate",
        "hosts": {"main": {"address": "smtp.example.com:587", "state": "Unreachable",
                           "error": "...", "step": "tcp", "failure": "connect",
                           "cannotReach": true},
                  "alternate": {...}},
        "checkedBy": "host:pid"}}

``state`` is the state of the host sends go to first (``activeHost``): when
the main host is down and the alternate answers, mail flows and the server
is Reachable, with the main host's error under ``hosts.main``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

STATUS_KEY = "health"
REACHABLE = "Reachable"
UNREACHABLE = "Unreachable"
UNKNOWN = "Unknown"  # never checked
MAIN = "main"
ALTERNATE = "alternate"

# Protocols the monitor checks (``mail.registry.OUTGOING``; a test keeps the two in step).
# Spelled out here so `reconcile status` need not import the SMTP stack.
CHECKED_PROTOCOLS = frozenset({"smtp", "graph", "ews"})


@dataclass(frozen=True, slots=True)
class HostHealth:
    address: str
    state: str
    error: str | None = None
    step: str | None = None
    failure: str | None = None
    cannot_reach: bool = False  # the failover rule: lets other daemons follow (X4)

    def to_json(self) -> dict[str, Any]:
        return {"address": self.address, "state": self.state, "error": self.error,
                "step": self.step, "failure": self.failure, "cannotReach": self.cannot_reach}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> HostHealth:
        return cls(str(data.get("address", "")), str(data.get("state", UNKNOWN)),
                   data.get("error"), data.get("step"), data.get("failure"),
                   bool(data.get("cannotReach", False)))

    @property
    def reachable(self) -> bool:
        return self.state == REACHABLE


@dataclass(frozen=True, slots=True)
class HealthRecord:
    state: str
    last_checked: datetime
    last_change: datetime
    active_host: str = MAIN
    hosts: Mapping[str, HostHealth] = field(default_factory=dict)
    last_error: str | None = None
    failed_step: str | None = None
    hint: str | None = None
    checked_by: str | None = None

    @property
    def reachable(self) -> bool:
        return self.state == REACHABLE

    def to_json(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "lastError": self.last_error,
            "failedStep": self.failed_step,
            "hint": self.hint,
            "lastChecked": self.last_checked.isoformat(),
            "lastChange": self.last_change.isoformat(),
            "activeHost": self.active_host,
            "hosts": {name: host.to_json() for name, host in self.hosts.items()},
            "checkedBy": self.checked_by,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> HealthRecord:
        return cls(
            state=str(data["state"]),
            last_checked=datetime.fromisoformat(data["lastChecked"]),
            last_change=datetime.fromisoformat(data["lastChange"]),
            active_host=str(data.get("activeHost", MAIN)),
            hosts={str(k): HostHealth.from_json(v) for k, v in (data.get("hosts") or {}).items()},
            last_error=data.get("lastError"),
            failed_step=data.get("failedStep"),
            hint=data.get("hint"),
            checked_by=data.get("checkedBy"),
        )


def read(status: Mapping[str, Any]) -> HealthRecord | None:
    """The health part of a status document; None when absent or not understood
    (a hand-edited or older row must not stop the monitor, nor a page showing it)."""
    return _parsed(status)[0]


def unreadable(status: Mapping[str, Any]) -> str | None:
    """Why the status has a health part :func:`read` cannot understand (a note for
    the reader: the server shows as Unknown); None when it is fine or absent."""
    return _parsed(status)[1]


def _parsed(status: Mapping[str, Any]) -> tuple[HealthRecord | None, str | None]:
    data = status.get(STATUS_KEY)
    if data is None:
        return None, None
    if not isinstance(data, Mapping):
        return None, _note(f"`{STATUS_KEY}` is a {type(data).__name__}, not a mapping")
    try:
        return HealthRecord.from_json(data), None
    except KeyError as exc:
        return None, _note(f"the field {exc} is missing")
    # AttributeError: a part hand-edited into another shape ("hosts": [...], a host "x").
    except (TypeError, ValueError, AttributeError) as exc:
        return None, _note(str(exc))


def _note(what: str) -> str:
    return (f"the stored health record cannot be read ({what}); the state is unknown until "
            "the monitor's next check writes a new one")


def merged(status: Mapping[str, Any], record: HealthRecord) -> dict[str, Any]:
    """The status document with its health part replaced and everything else kept."""
    return {**status, STATUS_KEY: record.to_json()}
