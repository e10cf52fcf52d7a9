"""OutgoingServer: a mail server the desk sends notifications through."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, ClassVar, Literal

from pydantic import Field, StrictBool

from reconciler.config.models.auth import Auth, NoAuth
from reconciler.config.models.base import (
    Email,
    HeaderText,
    Hostname,
    HttpUrl,
    Model,
    Port,
    Ref,
    Resource,
)


class OutgoingProtocol(StrEnum):
    SMTP = "smtp"
    EWS = "ews"  # Exchange Web Services (the seeds' "MAPI")
    GRAPH = "graph"  # Microsoft Graph sendMail


class Security(StrEnum):
    NONE = "none"
    STARTTLS = "starttls"  # upgrade after connect (the seeds' "TLS", port 587)
    TLS = "tls"  # TLS from the first byte (the seeds' "SSL"/SMTPS, port 465)


class NationalCloud(StrEnum):
    GLOBAL = "global"
    US_GOV_L4 = "usGovL4"
    US_GOV_L5 = "usGovL5"
    CHINA = "china"
    GERMANY = "germany"


class Oversize(StrEnum):
    """What happens to a notification's attachments above ``attachmentLimitMB``."""

    DROP = "drop"  # sent without them, each named (the products' behaviour)
    REFUSE = "refuse"  # the notification is refused at intake; nothing is stored


class OutgoingAttachments(Model):
    oversize: Oversize | None = Field(
        default=None,
        description="drop: sent without the attachments over the limit, each named in the "
        "intake answer and the SENT audit entry; refuse: intake answers 422 naming each "
        "file, nothing is stored. Derived as drop.")


class OutgoingServerSpec(Model):
    email: Email = Field(description="From address of every notification sent through it.")
    sender_name: HeaderText | None = Field(default=None, description="Display name of From.")
    reply_to: Email | None = Field(
        default=None, description="Where replies go; a monitored mailbox so they become tickets.")
    protocol: OutgoingProtocol = OutgoingProtocol.SMTP
    host: Hostname | None = Field(
        default=None, description="SMTP server or EWS host; not used by Graph.")
    port: Port | None = Field(default=None, description="Derived from protocol and security.")
    security: Security | None = Field(
        default=None, description="none | starttls | tls; derived as tls for EWS/Graph.")
    alternate_host: Hostname | None = Field(
        default=None, description="Used while the main host is unreachable.")
    alternate_port: Port | None = None
    ews_url: HttpUrl | None = Field(
        default=None, description="EWS endpoint; derived as https://HOST/EWS/Exchange.asmx.")
    national_cloud: NationalCloud | None = Field(
        default=None, description="Graph national cloud; picks the endpoint.")
    graph_endpoint: HttpUrl | None = Field(default=None, description="Derived from the cloud.")
    mailbox: Email | None = Field(
        default=None, description="Mailbox sent from with Graph/EWS; defaults to email.")
    save_to_sent_items: StrictBool = True
    auth: Auth = Field(default_factory=NoAuth)
    proxy: Annotated[str | None, Ref("ProxyServer")] = None
    recipient_filter: Annotated[str | None, Ref("RecipientFilter")] = None
    enabled: StrictBool = True
    primary: StrictBool = False
    attachment_limit_mb: float | None = Field(
        default=None, gt=0, alias="attachmentLimitMB", description="Derived as 20 MB.")
    attachments: OutgoingAttachments = Field(
        default_factory=OutgoingAttachments,
        description="What to do with attachments over attachmentLimitMB.")
    max_concurrency: int | None = Field(
        default=None, ge=1, le=64, description="Requests in flight; Graph derives 4 per mailbox.")
    timeout_seconds: float = Field(default=60, gt=0, le=600)
    retry_lifetime_minutes: int | None = Field(
        default=None, ge=0, le=10080, description="Give up retrying after; MailSettings default.")
    debug: StrictBool = Field(
        default=False, description="Log the protocol conversation (no secrets).")


class OutgoingServer(Resource):
    KIND: ClassVar[str] = "OutgoingServer"
    kind: Literal["OutgoingServer"]
    spec: OutgoingServerSpec
