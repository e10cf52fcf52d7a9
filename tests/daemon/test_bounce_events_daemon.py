"""Bounces and delivery events end to end (O14), with real peers only: the daemon sends
a notification through a private Postfix, which accepts it and then bounces it (unknown
user) with a DSN of its own making, delivered into the desk's Dovecot mailbox; the
daemon's incoming runner fetches it, audits BOUNCED on the notification, and the
events webhook receives SENT then BOUNCED for it, signed, in that order."""
# ruff: noqa: F811  (bouncing_postfix is a fixture)

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from incoming.incoming_kit import PASSWORD_ENV, Receiver, incoming_server, put_config, until
from incoming.incoming_kit import settings as mail_settings
from peers.dovecot import DovecotInstance, MailUser
from peers.postfix import BouncingPostfix, bouncing_postfix  # noqa: F401
from peers.smtp import PeerCerts

from reconciler.daemon.app import Daemon
from reconciler.runtime.webhook import SIGNATURE_HEADER, signature
from reconciler.state import SqlStore, open_store
from reconciler.state.base import AuditStatus

from .app_kit import WAIT_S, enqueue, note, smtp_server
from .app_kit import settings as daemon_settings

SECRET = "bounce-events-signing-key-3141"


async def test_a_postfix_bounce_is_audited_and_posted_after_the_sent_event(
        tmp_path: Path, dovecot: DovecotInstance, certs: PeerCerts,
        bouncing_postfix: tuple[BouncingPostfix, MailUser],
        monkeypatch: pytest.MonkeyPatch) -> None:
    # SQLite only: the store's part is the same on both and covered by tests/state.
    with open_store(tmp_path / "state.db") as store:
        await _bounce_round_trip(store, dovecot, certs, *bouncing_postfix, monkeypatch)


async def _bounce_round_trip(store: SqlStore, dovecot: DovecotInstance, certs: PeerCerts,
                             postfix: BouncingPostfix, desk: MailUser,
                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PASSWORD_ENV, desk.password)
    monkeypatch.setenv("BOUNCE_EVENTS_SECRET", SECRET)
    put_config(store, smtp_server("desk", postfix.port, primary=True, email=desk.name),
               incoming_server(dovecot, desk, email=desk.name), mail_settings())
    outbox_id = enqueue(store, note("nobody@bounce.test"))
    receiver = Receiver().start()
    daemon = Daemon(daemon_settings(
        store_url="unused", ca_file=str(certs.ca_file), events_webhook=receiver.url,
        events_secret="env:BOUNCE_EVENTS_SECRET", incoming_interval_seconds=0.2),
        store, api=False, health=False, handle_signals=False)
    stop = asyncio.Event()
    task = asyncio.create_task(daemon.run(stop))
    try:
        await until(lambda: len(receiver.received) >= 2, timeout=WAIT_S)
    finally:
        stop.set()
        await asyncio.wait_for(task, WAIT_S)
        receiver.stop()
    [bounced] = store.audit.search(outbox_id=outbox_id, status=AuditStatus.BOUNCED)
    [sent] = store.audit.search(outbox_id=outbox_id, status=AuditStatus.SENT)
    assert (bounced.recipient, bounced.server, bounced.message_id) == (
        "nobody@bounce.test", "desk", sent.message_id)
    assert bounced.details is not None
    assert (bounced.details["status"], bounced.details["kind"]) == ("5.1.1", "hard")
    assert "unknown user" in bounced.details["diagnostic"]
    assert bounced.details["reportingMta"] == "mx.bounce.test"
    # The DSN itself was no ticket, and nothing else reached the webhook.
    assert store.audit.count(status=AuditStatus.PROCESSED) == 0
    bodies = [json.loads(body) for _, body in receiver.received]
    assert [(b["event"], b["notificationId"], b["recipient"]) for b in bodies] == [
        ("sent", outbox_id, "nobody@bounce.test"), ("bounced", outbox_id, "nobody@bounce.test")]
    assert bodies[1]["bounce"]["status"] == "5.1.1" and bodies[1]["rejectReason"] == "bounced"
    for headers, body in receiver.received:
        stamp = headers[SIGNATURE_HEADER].split(",")[0].removeprefix("t=")
        assert headers[SIGNATURE_HEADER] == signature(SECRET, int(stamp), body)
