"""Builders for the fetcher tests: IncomingServer resources pointing at the session's Dovecot."""

from __future__ import annotations

from typing import Any

from peers.dovecot import DovecotInstance, MailUser

from reconciler.config.models.incoming_server import IncomingServer
from reconciler.incoming.fetchers import AlreadyDone, FetchedMail, Fetcher

PASSWORD_ENV = "INCOMING_TEST_PASSWORD"
PORTS = {"imap": "imap", "imaps": "imaps", "pop3": "pop3", "pop3s": "pop3s"}


def incoming_server(dovecot: DovecotInstance, user: MailUser, protocol: str = "imaps", *,
                    auth: str = "basic", host: str = "127.0.0.1", name: str = "desk",
                    **spec: Any) -> IncomingServer:
    body: dict[str, Any] = {"email": "desk@example.test", "protocol": protocol, "host": host,
                            "port": getattr(dovecot, PORTS[protocol])}
    if auth == "basic":
        body["auth"] = {"type": "basic", "username": user.name,
                        "password": {"secretRef": f"env:{PASSWORD_ENV}"}}
    elif auth == "oauth2":
        body["auth"] = {"type": "oauth2", "clientId": "desk-app", "username": user.name}
    body.update(spec)
    return IncomingServer.model_validate({
        "apiVersion": "reconciler.dev/v1", "kind": "IncomingServer",
        "metadata": {"name": name, "namespace": "default"}, "spec": body})


async def fetch_all(fetcher: Fetcher, done: AlreadyDone = frozenset(),
                    limit: int = 1000) -> list[FetchedMail]:
    return [mail async for mail in fetcher.fetch(done, limit)]
