"""EmailCommand: `$Field=Value$` commands and `@@resource.question=answer@@` resource
answers parsed out of incoming mail."""

from __future__ import annotations

from enum import StrEnum
from typing import ClassVar, Literal

from pydantic import Field, StrictBool

from reconciler.config.models.base import Model, NonEmptyStr, Resource, delimiter_type

COMMAND_DELIMITER_CHARS = "!#$%&*@^|~"
CommandDelimiter = delimiter_type("delimiter", COMMAND_DELIMITER_CHARS, 2)


class QuestionType(StrEnum):
    SELECT = "select"
    RADIO = "radio"
    STRING = "string"
    CHECK = "check"  # the only type that takes several answers


class ResourceQuestion(Model):
    """One question of a service template's resource, as the desk defines it."""

    type: QuestionType
    options: list[NonEmptyStr] = Field(
        default_factory=list, description="The option names an answer must be one of "
        "(select, radio, check); empty accepts any answer.")


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
    resources: dict[str, dict[str, ResourceQuestion]] = Field(
        default_factory=dict, description="Resource api key -> question api key -> question: "
        "the answers @@resource.question=answer@@ may give. Empty: answers are passed on "
        "unchecked.")
    authorized_senders_only: StrictBool = Field(
        default=True, description="Parse only mail from users known to the desk.")


class EmailCommand(Resource):
    KIND: ClassVar[str] = "EmailCommand"
    kind: Literal["EmailCommand"]
    spec: EmailCommandSpec
