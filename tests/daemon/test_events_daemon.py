"""The whole daemon: its incoming runner fetches from Dovecot, the event lands in the
store, the desk pulls it over the API and the webhook receives it (I8)."""

from __future__ import annotations

import asyncio
import socket

import httpx
import pytest
from incoming.incoming_kit import (
    PASSWORD_ENV,
    Receiver,
    corpus,
    incoming_server,
    put_config,
    settings,
    until,
)
from peers.dovecot import DovecotInstance, MailUser
from peers.smtp import PeerCerts

from reconciler.daemon.app import Daemon
from reconciler.state import SqlStore

from .app_kit import WAIT_S
from .app_kit import settings as daemon_settings

TOKEN = "events-daemon-token-51"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_the_daemon_fetches_and_serves_and_posts_events(
        store: SqlStore, store_url: str, dovecot: DovecotInstance, mailbox: MailUser,
        certs: PeerCerts, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PASSWORD_ENV, mailbox.password)
    monkeypatch.setenv("EVENTS_TEST_TOKEN", TOKEN)
    put_config(store, incoming_server(dovecot, mailbox), settings())
    receiver = Receiver().start()
    port = free_port()
    daemon = Daemon(daemon_settings(
        store_url=store_url, ca_file=str(certs.ca_file), listen_port=port,
        api_tokens=("env:EVENTS_TEST_TOKEN",), events_webhook=receiver.url,
        incoming_interval_seconds=0.2), store, health=False)
    stop = asyncio.Event()
    task = asyncio.create_task(daemon.run(stop))
    try:
        await asyncio.wait_for(daemon.ready.wait(), WAIT_S)
        dovecot.deliver(mailbox, corpus("01-new-request-plain.eml"))
        await until(lambda: len(receiver.received) == 1)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}",
                                     headers={"Authorization": f"Bearer {TOKEN}"}) as client:
            await until(lambda: daemon.api_server is not None and daemon.api_server.started)
            page = (await client.get("/v1/events", params={"after": 0})).json()
        [item] = page["events"]
        assert item["event"] == receiver.bodies()[0]
        assert item["state"] == "delivered"
    finally:
        stop.set()
        await asyncio.wait_for(task, WAIT_S)
        receiver.stop()
