"""SyncPolicy: how the daemon's syncer treats this namespace's resources (SPEC X5).

It lives in the config repo, so changing it is reviewed like any other change.
Where to pull from and with which credentials are operator settings of the
daemon (`reconcile daemon --sync-repo ...`), never here.
"""

from __future__ import annotations

from enum import StrEnum
from typing import ClassVar, Literal

from pydantic import Field, StrictBool, field_validator

from reconciler.config import schedule
from reconciler.config.models.base import Model, NonEmptyStr, Resource


class SyncMode(StrEnum):
    OFF = "off"  # the syncer leaves these resources alone
    PLAN = "plan"  # it plans each commit and reports OutOfSync; a person applies
    APPLY = "apply"  # it applies each commit by itself, with apply's safety rules


class SelfHeal(StrEnum):
    OFF = "off"
    WARN = "warn"  # out-of-band changes are reported (status, metric, notification)
    HEAL = "heal"  # ... and git's version is written back


class SyncWindowSpec(Model):
    kind: Literal["allow", "deny"] = Field(
        description="deny: no automatic apply while open; allow: automatic applies only "
        "while one is open.")
    schedule: NonEmptyStr = Field(description="Five-field cron: when the window opens.")
    duration: str = Field(description="How long it stays open: 90m, 1h30m, 2d.")
    time_zone: NonEmptyStr = Field(default="UTC", description="IANA zone of the schedule.")

    @field_validator("schedule")
    @classmethod
    def _cron(cls, value: str) -> str:
        return schedule.cron_schedule(value)

    @field_validator("duration")
    @classmethod
    def _duration(cls, value: str) -> str:
        schedule.parse_duration(value)
        return value

    @field_validator("time_zone")
    @classmethod
    def _zone(cls, value: str) -> str:
        return schedule.time_zone(value)


class VerifySpec(Model):
    """After an automatic apply, probe each changed server that worked before it; one that
    stops working makes the syncer roll the apply back by itself."""

    enabled: StrictBool = True
    window_seconds: float = Field(default=120, gt=0, le=3600,
                                  description="How long changed servers are watched.")
    interval_seconds: float = Field(default=10, gt=0, le=600,
                                    description="Between probe rounds.")
    failures: int = Field(default=3, ge=1, le=100,
                          description="Unreachable rounds in a row that mean broken.")


class SyncPolicySpec(Model):
    # mode defaults to plan: a repo that never opted in is only reported, never applied,
    # so pointing a daemon at a repository cannot change live mail servers by surprise.
    kinds: list[NonEmptyStr] = Field(
        default_factory=list, description="The kinds this policy covers; empty: every kind "
        "of the namespace without a policy of its own.")
    mode: SyncMode = SyncMode.PLAN
    self_heal: SelfHeal = SelfHeal.WARN
    prune: StrictBool = Field(default=False, description="Delete live resources of this "
                              "scope that the repository no longer has.")
    windows: list[SyncWindowSpec] = Field(default_factory=list)
    verify: VerifySpec = Field(default_factory=VerifySpec)


class SyncPolicy(Resource):
    KIND: ClassVar[str] = "SyncPolicy"
    kind: Literal["SyncPolicy"]
    spec: SyncPolicySpec


