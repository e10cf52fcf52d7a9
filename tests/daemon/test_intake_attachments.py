"""Attachments over the server's limit (O4, issue 11 item 9), through the whole daemon
(uvicorn intake + worker) to a real SMTP peer, on SQLite and PostgreSQL.

The intake routes a notification that carries attachments with the live config, so its
202 names each file the server will leave out; a server whose ``attachments.oversize``
is ``refuse`` gets a 422 naming each file and its size against the limit instead, with
nothing stored and nothing sent. The worker keeps to ``refuse`` for a message the
intake never checked. A namespace nothing could send from is refused up front too.
"""

# The fixtures come from api_kit (tests/daemon has no conftest of its own);
# using them as parameters looks like a redefinition to the linter.
# ruff: noqa: F811

from __future__ import annotations

import asyncio
import base64
import socket
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import httpx
import pytest
from peers.smtp import SmtpPeer

from reconciler.daemon.app import Daemon
from reconciler.runtime.live_config import ConfigHolder
from reconciler.state import SqlStore
from reconciler.state.base import AuditStatus, OutboxState

from .api.api_kit import (  # noqa: F401  (api and serve_api are fixtures)
    ServeApi,
    ServedApi,
    api,
    serve_api,
)
from .app_kit import (
    audit_of,
    commit,
    enqueue,
    mail_settings,
    note,
    running_worker,
    sent,
    settings,
    smtp_server,
    until,
)

TOKEN_ENV = "INTAKE_ATTACHMENTS_TEST_TOKEN"
TOKEN = "intake-attachments-token-83"
LIMIT = 1024 * 1024  # attachmentLimitMB: 1
BIG = b"%" * (LIMIT + 1)  # over the limit on its own
HALF = b"h" * (LIMIT // 2 + 1)  # fits alone, not with a second one


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _file(name: str, data: bytes) -> dict[str, str]:
    return {"name": name, "contentType": "application/octet-stream",
            "data": base64.b64encode(data).decode()}


def _body(*files: dict[str, str]) -> dict[str, Any]:
    return {"module": "request", "to": ["jane@corp.example"], "subject": "Your report",
            "textBody": "attached", "attachments": list(files)}


@pytest.fixture
def peer() -> Iterator[SmtpPeer]:
    with SmtpPeer("plain") as started:
        yield started


Client = httpx.AsyncClient


def _with_daemon(store: SqlStore, store_url: str,
                 work: Callable[[Client, Daemon], Awaitable[None]]) -> None:
    """Run the daemon (intake and worker, no health monitor) and ``work`` against it."""

    async def main() -> None:
        port = _free_port()
        daemon = Daemon(settings(store_url=store_url, listen_port=port,
                                 api_tokens=(f"env:{TOKEN_ENV}",)), store, health=False)
        stop = asyncio.Event()
        task = asyncio.create_task(daemon.run(stop))
        try:
            await asyncio.wait_for(daemon.ready.wait(), 30)
            await until(lambda: daemon.api_server is not None and daemon.api_server.started,
                        "the API to listen")
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60,
                                         headers={"Authorization": f"Bearer {TOKEN}"}) as c:
                await work(c, daemon)
        finally:
            stop.set()
            await asyncio.wait_for(task, 60)

    asyncio.run(main())


def test_the_202_names_each_attachment_the_server_will_leave_out(
    store: SqlStore, store_url: str, peer: SmtpPeer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    commit(store, smtp_server("desk", peer.port, primary=True, attachmentLimitMB=1))
    answers: dict[str, httpx.Response] = {}

    async def work(client: Client, _daemon: Daemon) -> None:
        answers["over"] = await client.post("/v1/notifications", json=_body(
            _file("scan.pdf", BIG), _file("a.log", HALF), _file("b.log", HALF),
            _file("note.txt", b"fits")))
        answers["fits"] = await client.post("/v1/notifications",
                                            json=_body(_file("note.txt", b"fits")))
        for answer in answers.values():
            await sent(store, answer.json()["id"])

    _with_daemon(store, store_url, work)
    over = answers["over"]
    assert over.status_code == 202, over.text
    assert over.json() == {
        "id": over.json()["id"], "duplicate": False, "status": "queued",
        "droppedAttachments": [
            {"name": "scan.pdf", "size": LIMIT + 1, "limit": LIMIT, "server": "desk",
             "reason": f"{LIMIT + 1} bytes is above the limit of 1 MB"},
            {"name": "b.log", "size": len(HALF), "limit": LIMIT, "server": "desk",
             "reason": f"would bring the attachments to {2 * len(HALF)} bytes, above the "
                       "limit of 1 MB"}]}
    # Nothing to leave out: the answer is the one it always was.
    assert answers["fits"].status_code == 202
    assert set(answers["fits"].json()) == {"id", "duplicate", "status"}

    # What the answer promised is what was sent, and the audit says the same.
    delivered = {m.message["Subject"]: m.message for m in peer.messages}
    assert len(peer.messages) == 2
    names = sorted(part.get_filename() for m in peer.messages for part in
                   m.message.iter_attachments())
    assert names == ["a.log", "note.txt", "note.txt"], delivered
    [row] = audit_of(store, over.json()["id"])
    assert row.status == AuditStatus.SENT
    assert row.details is not None
    assert [d["name"] for d in row.details["droppedAttachments"]] == ["scan.pdf", "b.log"]


def test_a_refusing_server_gets_422_naming_each_file_and_nothing_is_stored_or_sent(
    store: SqlStore, store_url: str, peer: SmtpPeer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    commit(store, smtp_server("desk", peer.port, primary=True, attachmentLimitMB=1,
                              attachments={"oversize": "refuse"}))
    answers: dict[str, httpx.Response] = {}

    async def work(client: Client, _daemon: Daemon) -> None:
        answers["over"] = await client.post("/v1/notifications", json=_body(
            _file("note.txt", b"fits"), _file("scan.pdf", BIG), _file("a.log", HALF),
            _file("b.log", HALF)))
        answers["fits"] = await client.post("/v1/notifications",
                                            json=_body(_file("note.txt", b"fits")))
        await sent(store, answers["fits"].json()["id"])

    _with_daemon(store, store_url, work)
    over = answers["over"]
    assert over.status_code == 422, over.text
    tail = (" (1048576 bytes) of server desk, which refuses oversize attachments "
            "(attachments.oversize: refuse); send a smaller file or a link instead")
    assert over.json() == {"detail": [
        {"loc": ["body", "attachments", 1], "field": "attachments[1]",
         "type": "attachment_too_large",
         "msg": f"attachment 'scan.pdf': {LIMIT + 1} bytes is above the limit of 1 MB"
                + tail},
        {"loc": ["body", "attachments", 3], "field": "attachments[3]",
         "type": "attachment_too_large",
         "msg": f"attachment 'b.log': would bring the attachments to {2 * len(HALF) + 4} "
                "bytes, above the limit of 1 MB" + tail}]}
    assert answers["fits"].status_code == 202, answers["fits"].text
    # Only the notification that fitted was stored, and only it was sent.
    assert store.outbox.depth(finished=True)[OutboxState.SENT] == 1
    assert sum(store.outbox.depth(finished=True).values()) == 1
    assert len(peer.messages) == 1


def test_the_worker_does_not_send_without_attachments_a_server_refuses(
    store: SqlStore, peer: SmtpPeer
) -> None:
    """A message the intake never checked (queued before the server was switched to
    refuse, or routed elsewhere at intake) fails naming the files; nothing is sent."""
    commit(store, smtp_server("desk", peer.port, primary=True, attachmentLimitMB=1,
                              attachments={"oversize": "refuse"}))
    outbox_id = enqueue(store, note(attachments=[
        {"name": "scan.pdf", "data": BIG}, {"name": "note.txt", "data": b"fits"}]))

    async def main() -> None:
        async with running_worker(store):
            await sent(store, outbox_id, OutboxState.FAILED)

    asyncio.run(main())
    [row] = audit_of(store, outbox_id)
    assert row.status == AuditStatus.SEND_FAILED
    assert row.reason == (f"'scan.pdf': {LIMIT + 1} bytes is above the limit of 1 MB; server "
                          "desk refuses oversize attachments (attachments.oversize: refuse)")
    assert peer.messages == []


def test_the_openapi_document_describes_the_dropped_attachments(api: ServedApi) -> None:
    with api.client(token=None) as client:
        document = client.get("/openapi.json").json()
    schemas = document["components"]["schemas"]
    dropped = schemas["Accepted"]["properties"]["droppedAttachments"]
    assert dropped["items"] == {"$ref": "#/components/schemas/DroppedAttachmentItem"}
    assert "droppedAttachments" not in schemas["Accepted"].get("required", [])
    assert set(schemas["DroppedAttachmentItem"]["properties"]) == {
        "name", "size", "limit", "reason", "server"}
    responses = document["paths"]["/v1/notifications"]["post"]["responses"]
    assert "droppedAttachments" in responses["202"]["description"]
    assert "refuses oversize attachments" in responses["422"]["description"]


def test_a_namespace_without_an_outgoing_server_is_refused(
    store: SqlStore, serve_api: ServeApi
) -> None:
    """Settings (or incoming servers) alone make a namespace known, but nothing there
    could send: refused at intake like an unknown one, not failed later."""
    commit(store, smtp_server("desk", 2525, primary=True), mail_settings("hr"))
    holder = ConfigHolder()
    holder.refresh(store)
    served = serve_api(config=holder)
    with served.client() as client:
        answer = client.post("/v1/notifications", json={**_body(), "namespace": "hr"})
        fine = client.post("/v1/notifications", json=_body())
    assert answer.status_code == 422, answer.text
    [problem] = answer.json()["detail"]
    assert problem["field"] == "namespace" and problem["type"] == "unknown_namespace"
    assert problem["msg"] == ("namespace 'hr' has no outgoing server in the live config "
                              f"(revision {holder.current.revision})")
    assert fine.status_code == 202, fine.text
    assert sum(store.outbox.depth().values()) == 1
