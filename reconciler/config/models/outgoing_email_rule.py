"""OutgoingEmailRule: send a module's notifications through a chosen server."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field, StrictBool

from reconciler.config.models.base import Condition, MatchMode, Model, NonEmptyStr, Ref, Resource


class OutgoingEmailRuleSpec(Model):
    module: NonEmptyStr = Field(description="request, problem, change, release, task, ...")
    order: int = Field(ge=0, description="Rules of a module are tried in ascending order.")
    match: MatchMode = MatchMode.ALL
    conditions: list[Condition] = Field(
        default_factory=list, description="Tests on context fields; none means always.")
    server: Annotated[str, Ref("OutgoingServer")]
    enabled: StrictBool = True
    description: str | None = None


class OutgoingEmailRule(Resource):
    KIND: ClassVar[str] = "OutgoingEmailRule"
    kind: Literal["OutgoingEmailRule"]
    spec: OutgoingEmailRuleSpec
