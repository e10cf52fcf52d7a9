"""SpamFilter: incoming mail matching its conditions is dropped, no ticket made."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, StrictBool

from reconciler.config.models.base import Condition, MatchMode, Model, Resource


class SpamFilterSpec(Model):
    match: MatchMode = MatchMode.ANY
    conditions: list[Condition] = Field(min_length=1, description="Fields: subject, from, body.")
    enabled: StrictBool = True


class SpamFilter(Resource):
    KIND: ClassVar[str] = "SpamFilter"
    kind: Literal["SpamFilter"]
    spec: SpamFilterSpec
