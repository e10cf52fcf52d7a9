"""SpamFilter: incoming mail matching its conditions is dropped, no ticket made."""

from __future__ import annotations

from difflib import get_close_matches
from typing import ClassVar, Literal

from pydantic import Field, StrictBool, field_validator
from pydantic_core import PydanticCustomError

from reconciler.config.models.base import Condition, MatchMode, Model, Resource

# What the incoming pipeline can test (incoming.pipeline.stages._MailFields; a test keeps
# the two in step). A misspelt field never matches anything, so a filter on it would
# validate clean and silently let every mail through: it is refused instead.
MAIL_FIELDS = ("subject", "from", "fromName", "replyTo", "to", "cc", "body")
HEADER_FIELD = "header:"
_FOLDED = {f.casefold(): f for f in MAIL_FIELDS}


class MailCondition(Condition):
    """A condition on a field of an incoming mail: one of MAIL_FIELDS or ``header:Name``."""

    @field_validator("field")
    @classmethod
    def _known_field(cls, value: str) -> str:
        # Names match case-insensitively in the pipeline (runtime.routing._lookup).
        folded = value.casefold()
        if folded in _FOLDED or (folded.startswith(HEADER_FIELD) and len(value) > 7):
            return value
        guess = next(iter(get_close_matches(folded, _FOLDED, n=1, cutoff=0.6)), None)
        hint = f"did you mean {_FOLDED[guess]}? " if guess else ""
        raise PydanticCustomError(
            "mail_field", "unknown mail field '{value}': {hint}use one of {known}, or "
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
