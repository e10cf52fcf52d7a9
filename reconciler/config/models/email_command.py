"""EmailCommand: `$Field=Value$` commands parsed out of incoming mail."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, StrictBool, field_validator
from pydantic_core import PydanticCustomError

from reconciler.config.models.base import Model, NonEmptyStr, Resource

COMMAND_DELIMITER_CHARS = frozenset("!@#$%^&*~|")


class EmailCommandSpec(Model):
    enabled: StrictBool = True
    subject_contains: NonEmptyStr = Field(
        description="Only mails whose subject contains this text are parsed."
    )
    delimiter: str = Field(default="$", description="Encloses each command: $Priority=High$.")
    operations: list[Literal["AddRequest", "EditRequest", "CloseRequest", "PickupRequest"]] = (
        Field(default_factory=lambda: ["AddRequest", "EditRequest", "CloseRequest",
                                       "PickupRequest"])
    )
    allowed_fields: list[NonEmptyStr] = Field(
        default_factory=list, description="Fields that may be set; empty means any known field."
    )
    authorized_senders_only: StrictBool = Field(
        default=True, description="Parse only mail from users known to the desk."
    )

    @field_validator("delimiter")
    @classmethod
    def _delimiter(cls, value: str) -> str:
        if not value or len(value) > 2 or any(c not in COMMAND_DELIMITER_CHARS for c in value):
            raise PydanticCustomError(
                "delimiter",
                "delimiter must be 1-2 of the characters {chars}",
                {"chars": " ".join(sorted(COMMAND_DELIMITER_CHARS))},
            )
        return value


class EmailCommand(Resource):
    KIND: ClassVar[str] = "EmailCommand"
    kind: Literal["EmailCommand"]
    spec: EmailCommandSpec
