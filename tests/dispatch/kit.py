"""Builders shared by the dispatch tests: resources as the config would hold them."""

from __future__ import annotations

from typing import Any

from reconciler.config.models.outgoing_email_rule import OutgoingEmailRule
from reconciler.config.models.outgoing_server import OutgoingServer
from reconciler.config.models.recipient_filter import RecipientFilter

PASSWORD_ENV = "DISPATCH_TEST_SMTP_PASSWORD"
PASSWORD = "Tr0ub4dor&3-not-for-logs"
USER = "desk-sender"
NAMESPACE = "default"


def _resource(kind: str, name: str, spec: dict[str, Any], namespace: str = NAMESPACE) -> dict:
    return {"apiVersion": "reconciler.dev/v1", "kind": kind,
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}


def server(name: str, *, namespace: str = NAMESPACE, **spec: Any) -> OutgoingServer:
    body: dict[str, Any] = {"email": f"{name}@desk.example", "replyTo": "support@desk.example",
                            "host": "smtp.desk.example", "port": 587, "security": "starttls"}
    body.update(spec)
    return OutgoingServer.model_validate(_resource("OutgoingServer", name, body, namespace))


def with_stored_sender_name(srv: OutgoingServer, name: str) -> OutgoingServer:
    """``srv`` with a senderName validate now refuses, as a store written by an older
    release may still hold it: compose must refuse it on its own."""
    spec = srv.spec.model_copy(update={"sender_name": name})
    return srv.model_copy(update={"spec": spec})


def rule(name: str, order: int, to: str, *conditions: dict[str, Any], module: str = "request",
         match: str = "all", enabled: bool = True) -> OutgoingEmailRule:
    spec = {"module": module, "order": order, "match": match, "conditions": list(conditions),
            "server": to, "enabled": enabled}
    return OutgoingEmailRule.model_validate(_resource("OutgoingEmailRule", name, spec))


def cond(field: str, operator: str = "equals", value: str | None = None, *,
         values: list[str] | None = None, case_sensitive: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {"field": field, "operator": operator, "caseSensitive": case_sensitive}
    if value is not None:
        out["value"] = value
    if values is not None:
        out["values"] = values
    return out


def recipient_filter(name: str, type: str, *, emails: list[str] | None = None,
                     domains: list[str] | None = None) -> RecipientFilter:
    spec = {"type": type, "emails": emails or [], "domains": domains or []}
    return RecipientFilter.model_validate(_resource("RecipientFilter", name, spec))


def basic_auth(password_env: str = PASSWORD_ENV, user: str = USER) -> dict[str, Any]:
    return {"type": "basic", "username": user, "password": {"secretRef": f"env:{password_env}"}}
