"""RecipientFilter: a reusable allow or ignore list of addresses and domains."""

from __future__ import annotations

from enum import StrEnum
from typing import ClassVar, Literal

from pydantic import Field, model_validator
from pydantic_core import PydanticCustomError

from reconciler.config.models.base import Domain, Email, Model, Resource


class FilterType(StrEnum):
    ALLOW = "allow"  # only listed addresses/domains pass
    IGNORE = "ignore"  # listed addresses/domains are dropped


class RecipientFilterSpec(Model):
    type: FilterType
    emails: list[Email] = Field(default_factory=list)
    domains: list[Domain] = Field(default_factory=list)

    @model_validator(mode="after")
    def _not_empty(self) -> RecipientFilterSpec:
        if not self.emails and not self.domains:
            raise PydanticCustomError(
                "empty_filter", "a filter needs at least one entry in `emails` or `domains`", {})
        return self


class RecipientFilter(Resource):
    KIND: ClassVar[str] = "RecipientFilter"
    kind: Literal["RecipientFilter"]
    spec: RecipientFilterSpec
