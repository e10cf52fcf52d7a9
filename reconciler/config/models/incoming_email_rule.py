"""IncomingEmailRule: act on fetched mail before it becomes a ticket."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, ClassVar, Literal

from pydantic import Field, StrictBool

from reconciler.config.models.base import MatchMode, Model, NonEmptyStr, Ref, Resource
from reconciler.config.models.spam_filter import MailCondition


class IncomingAction(StrEnum):
    SET_FIELDS = "setFields"  # override the server's ticket defaults
    IGNORE = "ignore"  # drop without creating a ticket (audited RECEIVED_IGNORED)


class IncomingEmailRuleSpec(Model):
    servers: list[Annotated[str, Ref("IncomingServer")]] = Field(
        default_factory=list, description="Servers it applies to; empty means all.")
    order: int = Field(ge=0)
    match: MatchMode = MatchMode.ALL
    conditions: list[MailCondition] = Field(
        min_length=1, description="Tests on subject, from, to, cc, body, headers.")
    action: IncomingAction = IncomingAction.SET_FIELDS
    set_fields: dict[NonEmptyStr, str] = Field(
        default_factory=dict, description="Ticket fields, e.g. technicianGroup, category.")
    stop_processing: StrictBool = Field(default=True, description="Skip later rules once matched.")
    enabled: StrictBool = True


class IncomingEmailRule(Resource):
    KIND: ClassVar[str] = "IncomingEmailRule"
    kind: Literal["IncomingEmailRule"]
    spec: IncomingEmailRuleSpec
