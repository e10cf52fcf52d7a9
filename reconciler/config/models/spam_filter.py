"""SpamFilter: incoming mail matching its conditions is dropped, no ticket made."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, StrictBool, field_validator
from pydantic_core import PydanticCustomError

from reconciler.config.diagnostics import did_you_mean
from reconciler.config.models.base import Condition, MatchMode, Model, Resource

# What the incoming pipeline can test (incoming.pipeline.stages._MailFields; a test keeps
# the two in step). A misspelt field never matches anything, so a filter on it would
# validate clean and silently let every mail through: it is refused instead.
MAIL_FIELDS = ("subject", "from", "fromName", "replyTo", "to", "cc", "body")
HEADER_FIELD = "header:"
_FOLDED = frozenset(f.casefold() for f in MAIL_FIELDS)


class MailCondition(Condition):
    """A condition on a field of an incoming mail: one of MAIL_FIELDS or ``header:Name``."""

    @field_validator("field")
    @classmethod
    def _known_field(cls, value: str) -> str:
        # Names match case-insensitively in the pipeline (runtime.routing._lookup).
        folded = value.casefold()
        if folded in _FOLDED or (folded.startswith(HEADER_FIELD) and len(value) > 7):
            return value
        hint = did_you_mean(value, MAIL_FIELDS, "no such field;")
        raise PydanticCustomError(
            "mail_field", "unknown mail field '{value}': {hint} use one of {known}, or "
            "header:NAME for any header",
            {"value": value, "hint": hint, "known": ", ".join(MAIL_FIELDS)})


class SpamFilterSpec(Model):
    match: MatchMode = MatchMode.ANY
    conditions: list[MailCondition] = Field(
        min_length=1, description="Fields: subject, from, fromName, replyTo, to, cc, body, "
        "header:NAME.")
    enabled: StrictBool = True


class SpamFilter(Resource):
    KIND: ClassVar[str] = "SpamFilter"
    kind: Literal["SpamFilter"]
    spec: SpamFilterSpec
