"""IncomingServer: a mailbox the desk fetches requests and replies from."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, ClassVar, Literal

from pydantic import Field, StrictBool

from reconciler.config.models.auth import Auth, NoAuth
from reconciler.config.models.base import (
    Domain,
    Email,
    Hostname,
    HttpUrl,
    Model,
    NonEmptyStr,
    Port,
    Ref,
    Resource,
)
from reconciler.config.models.outgoing_server import NationalCloud


class IncomingProtocol(StrEnum):
    IMAP = "imap"
    IMAPS = "imaps"
    POP3 = "pop3"
    POP3S = "pop3s"
    EWS = "ews"
    GRAPH = "graph"


class ErrorFolder(Model):
    """Where a mail that fails processing is moved so it stops blocking the fetch."""

    enabled: StrictBool = False
    name: NonEmptyStr = "reconciler-errors"
    stop_fetching_after: int | None = Field(
        default=None, ge=1, description="Stop fetching once this many mails are in the folder.")
    notify: StrictBool = True


class CreationRestriction(Model):
    """The seeds' "disable new request creation by email", with its exceptions."""

    disable_new_requests: StrictBool = False
    allowed_emails: list[Email] = Field(default_factory=list)
    allowed_domains: list[Domain] = Field(default_factory=list)


class TicketDefaults(Model):
    technician_group: NonEmptyStr | None = None
    category: NonEmptyStr | None = None


class IncomingServerSpec(Model):
    email: Email = Field(description="The support mailbox address.")
    addresses: list[Email] = Field(
        default_factory=list, description="Further addresses delivered into this mailbox.")
    protocol: IncomingProtocol = IncomingProtocol.IMAPS
    host: Hostname | None = None
    port: Port | None = Field(default=None, description="Derived from the protocol.")
    starttls: StrictBool = Field(
        default=False, description="Upgrade plain IMAP/POP3 with STARTTLS.")
    folder: NonEmptyStr = "INBOX"
    ews_url: HttpUrl | None = None
    national_cloud: NationalCloud | None = None
    graph_endpoint: HttpUrl | None = None
    auth: Auth = Field(default_factory=NoAuth)
    proxy: Annotated[str | None, Ref("ProxyServer")] = None
    recipient_filter: Annotated[str | None, Ref("RecipientFilter")] = Field(
        default=None, description="Allow/ignore list applied to sender and Reply-To.")
    spam_filters: list[Annotated[str, Ref("SpamFilter")]] = Field(default_factory=list)
    email_command: Annotated[str | None, Ref("EmailCommand")] = None
    fetch_interval_minutes: int = Field(default=1, ge=1, le=1440)
    enabled: StrictBool = True
    error_folder: ErrorFolder = Field(default_factory=ErrorFolder)
    creation: CreationRestriction = Field(default_factory=CreationRestriction)
    defaults: TicketDefaults = Field(default_factory=TicketDefaults)
    failure_notify_threshold: int = Field(
        default=5, ge=1, le=1000, description="Consecutive connection failures before notifying.")
    debug: StrictBool = False


class IncomingServer(Resource):
    KIND: ClassVar[str] = "IncomingServer"
    kind: Literal["IncomingServer"]
    spec: IncomingServerSpec
