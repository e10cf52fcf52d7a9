"""One pydantic model per kind (SPEC C2); this registry maps kind names to them."""

from __future__ import annotations

from reconciler.config.models.base import Resource
from reconciler.config.models.email_command import EmailCommand
from reconciler.config.models.incoming_email_rule import IncomingEmailRule
from reconciler.config.models.incoming_server import IncomingServer
from reconciler.config.models.mail_settings import MailSettings
from reconciler.config.models.outgoing_email_rule import OutgoingEmailRule
from reconciler.config.models.outgoing_server import OutgoingServer
from reconciler.config.models.proxy_server import ProxyServer
from reconciler.config.models.recipient_filter import RecipientFilter
from reconciler.config.models.sender_directory import SenderDirectory
from reconciler.config.models.spam_filter import SpamFilter
from reconciler.config.models.sync_policy import SyncPolicy

KINDS: dict[str, type[Resource]] = {cls.KIND: cls for cls in (
    OutgoingServer, IncomingServer, OutgoingEmailRule, IncomingEmailRule, RecipientFilter,
    SpamFilter, ProxyServer, EmailCommand, MailSettings,
    SenderDirectory, SyncPolicy)}
