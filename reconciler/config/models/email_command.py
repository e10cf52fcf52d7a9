"""EmailCommand: `$Field=Value$` commands parsed out of incoming mail."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, StrictBool

from reconciler.config.models.base import Model, NonEmptyStr, Resource, delimiter_type

COMMAND_DELIMITER_CHARS = "!#$%&*@^|~"
CommandDelimiter = delimiter_type("delimiter", COMMAND_DELIMITER_CHARS, 2)


class EmailCommandSpec(Model):
    enabled: StrictBool = True
    subject_contains: NonEmptyStr = Field(
        description="Only mails whose subject contains this text are parsed.")
    delimiter: CommandDelimiter = Field(
        default="$", description="Encloses each command: $Priority=High$.")
    operations: list[Literal["AddRequest", "EditRequest", "CloseRequest", "PickupRequest"]] = (
        Field(default_factory=lambda: ["AddRequest", "EditRequest", "CloseRequest",
                                       "PickupRequest"]))
    allowed_fields: list[NonEmptyStr] = Field(
        default_factory=list, description="Fields that may be set; empty means any known field.")
    authorized_senders_only: StrictBool = Field(
        default=True, description="Parse only mail from users known to the desk.")


class EmailCommand(Resource):
    KIND: ClassVar[str] = "EmailCommand"
    kind: Literal["EmailCommand"]
    spec: EmailCommandSpec
