"""Builders for the fetcher tests: IncomingServer resources pointing at the session's Dovecot.

A test module that imports :func:`fetch_env` gets it as an autouse fixture.
"""

from __future__ import annotations

import email
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from peers.dovecot import DovecotInstance, MailUser, sample_mail

from reconciler.config.models.incoming_server import IncomingServer
from reconciler.mail.fetcher import AlreadyDone, FetchedMail, Fetcher, FetchError
from reconciler.mail.registry import fetcher_for
from reconciler.runtime.tls import CA_FILE_ENV

PASSWORD_ENV = "INCOMING_TEST_PASSWORD"
PORTS = {"imap": "imap", "imaps": "imaps", "pop3": "pop3", "pop3s": "pop3s"}


@pytest.fixture(autouse=True)
def fetch_env(monkeypatch: pytest.MonkeyPatch, mailbox: MailUser) -> None:
    """The mailbox password where the servers' secret reference points; no CA from the
    environment, so each test says which CA it trusts."""
    monkeypatch.delenv(CA_FILE_ENV, raising=False)
    monkeypatch.setenv(PASSWORD_ENV, mailbox.password)


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


async def fetch_delivered(dovecot: DovecotInstance, user: MailUser, ca_file: str | Path,
                          protocol: str, **spec: Any) -> tuple[list[bytes], list[FetchedMail]]:
    """Delivers three sample mails, then fetches all mail in one new session: (sent, fetched)."""
    sent = [sample_mail(i) for i in range(3)]
    dovecot.deliver_many(user, sent)
    server = incoming_server(dovecot, user, protocol, **spec)
    async with fetcher_for(server, ca_file=ca_file) as fetcher:
        return sent, await fetch_all(fetcher)


async def connect_error(fetcher: Fetcher) -> FetchError:
    """The FetchError ``connect`` raises; the fetcher is closed afterwards."""
    with pytest.raises(FetchError) as caught:
        await fetcher.connect()
    await fetcher.aclose()
    return caught.value


def subjects(mails: list[FetchedMail]) -> list[str]:
    return [str(email.message_from_bytes(m.raw)["Subject"]) for m in mails]


async def traced_fetch(fetcher: Fetcher, limit: int = 500) -> tuple[int, int, int]:
    """Fetches up to ``limit`` mails while tracing memory: (mails, bytes, peak traced bytes)."""
    total = count = 0
    tracemalloc.start()
    try:
        async for mail in fetcher.fetch(frozenset(), limit=limit):
            total += mail.size
            count += 1
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return count, total, peak
