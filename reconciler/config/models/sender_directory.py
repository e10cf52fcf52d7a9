"""SenderDirectory: the desk's users, as the incoming pipeline asks about senders (SPEC I11).

With ``guestTickets: false`` (the default) only senders in a directory may create or
update tickets; this kind keeps that list in the config repo, so it is applied,
versioned and read from the store like every other kind. All SenderDirectory
resources of a namespace count together.
"""

from __future__ import annotations

from enum import StrEnum
from typing import ClassVar, Literal

from pydantic import Field, StrictBool

from reconciler.config.models.base import Domain, Email, Model, NonEmptyStr, Resource


class UserStatus(StrEnum):
    ACTIVE = "active"
    ARCHIVED = "archived"
    DELETED = "deleted"


class DirectoryUser(Model):
    email: Email
    name: NonEmptyStr | None = None
    status: UserStatus = UserStatus.ACTIVE
    commands: StrictBool = Field(default=False, description="May send email commands.")


class SenderDirectorySpec(Model):
    users: list[DirectoryUser] = Field(default_factory=list)
    domains: list[Domain] = Field(
        default_factory=list, description="Every address of these domains is a known, active "
        "user without command rights.")


class SenderDirectory(Resource):
    KIND: ClassVar[str] = "SenderDirectory"
    kind: Literal["SenderDirectory"]
    spec: SenderDirectorySpec
