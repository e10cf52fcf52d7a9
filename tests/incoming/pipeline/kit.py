"""The configuration the corpus tests run with: one Acme namespace, as YAML would hold it."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from reconciler.config.models import KINDS
from reconciler.config.models.base import Resource
from reconciler.config.models.incoming_server import IncomingServer
from reconciler.incoming.pipeline.context import PipelineContext
from reconciler.incoming.pipeline.directory import (
    DirectoryEntry,
    MappingSenderDirectory,
    UserStatus,
)
from reconciler.state.base import AuditEntry, AuditStatus

MAIL = Path(__file__).resolve().parents[2] / "data" / "mail"
NS = "acme"

# Message-IDs of the desk's notifications for request 555 (03 replies to one of them).
THREADS = {"notif-555@desk.acme.example": ("request", "555"),
           "notif-554@desk.acme.example": ("request", "555")}


def resource(kind: str, name: str, spec: dict[str, Any]) -> Resource:
    return KINDS[kind].model_validate({
        "apiVersion": "reconciler.dev/v1", "kind": kind,
        "metadata": {"name": name, "namespace": NS}, "spec": spec})


def server_spec(**overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "email": "support@acme.example", "addresses": ["help@acme.example"],
        "protocol": "imaps", "host": "imap.acme.example",
        "recipientFilter": "acme-ignore", "spamFilters": ["prizes"],
        "emailCommand": "desk-cmd",
        "defaults": {"technicianGroup": "Service Desk", "category": "General"},
    }
    spec.update(overrides)
    return spec


def settings_spec(**overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "emailToRequest": True, "guestTickets": False, "createFromCc": False,
        "createFromBcc": False, "useReplyTo": True, "baseDelimiter": "##",
        # small, so the corpus can hold a file above it without being megabytes
        "attachmentLimitMB": 0.01,
    }
    spec.update(overrides)
    return spec


def resources(*, server: dict[str, Any] | None = None, settings: dict[str, Any] | None = None,
              ignore_list: dict[str, Any] | None = None) -> list[Resource]:
    return [
        resource("IncomingServer", "support", server or server_spec()),
        resource("MailSettings", "acme", settings or settings_spec()),
        resource("OutgoingServer", "notify", {
            "email": "notifications@acme.example", "replyTo": "support@acme.example",
            "host": "smtp.acme.example", "port": 587, "security": "starttls", "primary": True}),
        resource("RecipientFilter", "acme-ignore", ignore_list or {
            "type": "ignore", "domains": ["ignored.example"]}),
        resource("RecipientFilter", "acme-only", {"type": "allow", "domains": ["acme.example"]}),
        resource("SpamFilter", "prizes", {"match": "any", "conditions": [
            {"field": "subject", "operator": "contains", "value": "win a prize"},
            {"field": "body", "operator": "contains", "value": "claim your reward now"}]}),
        resource("IncomingEmailRule", "newsletters", {
            "order": 5, "action": "ignore",
            "conditions": [{"field": "subject", "operator": "startsWith",
                            "value": "[newsletter]"}]}),
        resource("IncomingEmailRule", "board", {
            "order": 10, "match": "any", "servers": ["support"],
            "conditions": [{"field": "from", "operator": "endsWith",
                            "value": "@board.acme.example"}],
            "setFields": {"technicianGroup": "Tier 2", "priority": "High"}}),
        resource("EmailCommand", "desk-cmd", {"subjectContains": "[desk-cmd]", "resources": {
            "res_301": {"qstn_select_302": {"type": "select", "options": ["compaq", "dell"]},
                        "qstn_radio_303": {"type": "radio", "options": ["yes", "no"]},
                        "qstn_check_304": {"type": "check",
                                           "options": ["Mouse", "Keyboard", "Monitor"]},
                        "qstn_check_305": {"type": "check", "options": ["Mouse"]},
                        "qstn_string_306": {"type": "string"}}}}),
    ]


DIRECTORY = MappingSenderDirectory(
    [DirectoryEntry("jane@acme.example", "Jane Doe", commands=True),
     DirectoryEntry("old@acme.example", status=UserStatus.ARCHIVED)],
    domains=["acme.example", "board.acme.example", "partner.example"])


_DEFAULT: Any = object()


def sent(message_id: str, *recipients: str, outbox_id: int = 7) -> list[AuditEntry]:
    """The SENT audit entries the desk wrote for a notification (what bounces match)."""
    return [AuditEntry(AuditStatus.SENT, "250 2.0.0 Ok", namespace="acme", server="mailer",
                       recipient=r, message_id=f"<{message_id}>", outbox_id=outbox_id,
                       module="request") for r in recipients]


# The notifications the corpus's bounces (53-56) are about.
SENT = {m[0]: sent(*m, outbox_id=n) for n, m in enumerate((
    ("notif-0059@desk.acme.example", "nobody@bounce.test"),
    ("notif-0060@desk.acme.example", "ghost@contoso.example"),
    ("notif-0061@desk.acme.example", "nosuchuser@gmail.example", "full@gmail.example"),
    ("notif-0062@desk.acme.example", "olduser@old.example")), start=59)}


def context(*, seen: Iterable[str] = (), directory: Any = _DEFAULT,
            sent: dict[str, list[AuditEntry]] | None = None, **kw: Any) -> PipelineContext:
    found = resources(**kw)
    server = next(r for r in found if isinstance(r, IncomingServer))
    known = frozenset(seen)
    return PipelineContext.from_resources(
        server, found, directory=DIRECTORY if directory is _DEFAULT else directory,
        seen_message_id=known.__contains__,
        thread_lookup=lambda ids: next((THREADS[i] for i in ids if i in THREADS), None),
        sent_lookup=lambda message_id: (sent or {}).get(message_id.strip("<>"), []))


def mail(name: str) -> bytes:
    return (MAIL / name).read_bytes()
