"""The daemon's HTTP API (SPEC O1, O8, X3) served by a real uvicorn on loopback,
over SQLite and PostgreSQL stores, driven with httpx."""

# The fixtures come from api_kit (tests/daemon has no conftest of its own);
# using them as parameters looks like a redefinition to the linter.
# ruff: noqa: F811

from __future__ import annotations

import asyncio
import base64
import json
import logging
import socket
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from reconciler.config.desired import ResourceKey
from reconciler.config.secrets import SecretError
from reconciler.daemon.api.body_limit import DEFAULT_MAX_BODY_BYTES
from reconciler.daemon.api.factory import create_api
from reconciler.daemon.intake import GroupCommitter
from reconciler.incoming.store import IncomingStore
from reconciler.runtime.api_tokens import ApiTokenError
from reconciler.runtime.live_config import ConfigHolder
from reconciler.runtime.metrics import DaemonMetrics
from reconciler.state import SqlStore, open_store
from reconciler.state.base import (
    AuditEntry,
    AuditStatus,
    EnqueueRequest,
    EnqueueResult,
    OutboxState,
    StoreUnavailable,
)

from .api_kit import (  # noqa: F401  (api and serve_api are fixtures)
    OTHER_TOKEN,
    OTHER_TOKEN_ENV,
    TOKEN,
    TOKEN_ENV,
    WORKER_ID,
    ServeApi,
    ServedApi,
    api,
    auth,
    live_config,
    notification,
    serve_api,
    settings_for,
)

GUARDED = [("POST", "/v1/notifications"), ("GET", "/v1/notifications/1"),
           ("GET", "/v1/audit"), ("GET", "/v1/status"), ("GET", "/v1/outbox"),
           ("POST", "/v1/outbox/actions/hold")]


def post(api: ServedApi, body: Any, token: str | None = TOKEN) -> httpx.Response:
    with api.client(token) as client:
        return client.post("/v1/notifications", json=body)


def reopened(api: ServedApi) -> SqlStore:
    """A second store object on the same database: what it sees was committed."""
    return open_store(api.store_url)


# -- authentication ------------------------------------------------------------


@pytest.mark.parametrize(("method", "path"), GUARDED)
def test_no_token_is_401_with_www_authenticate(api: ServedApi, method: str, path: str) -> None:
    with api.client(token=None) as client:
        missing = client.request(method, path, json=notification())
        wrong = client.request(method, path, json=notification(),
                               headers=auth(TOKEN + "x"))
        basic = client.request(method, path, json=notification(),
                               headers={"Authorization": "Basic dXNlcjpwYXNz"})
    for response in (missing, wrong, basic):
        assert response.status_code == 401, response.text
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert 'error="invalid_token"' in wrong.headers["WWW-Authenticate"]
    with reopened(api) as fresh:
        assert fresh.outbox.depth()[OutboxState.QUEUED] == 0


def test_a_refused_token_is_logged_without_the_token(
    api: ServedApi, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="reconciler")
    wrong = TOKEN + "-guessed"
    assert post(api, notification(), token=wrong).status_code == 401
    refused = [r.getMessage() for r in caplog.records if "wrong token" in r.getMessage()]
    assert refused == ["refused POST /v1/notifications from 127.0.0.1: wrong token"]
    assert wrong not in caplog.text and TOKEN not in caplog.text


def test_every_configured_token_is_accepted(serve_api: ServeApi) -> None:
    served = serve_api(tokens=(f"env:{TOKEN_ENV}", f"env:{OTHER_TOKEN_ENV}"))
    assert post(served, notification(1)).status_code == 202
    assert post(served, notification(2), token=OTHER_TOKEN).status_code == 202


def test_healthz_needs_no_token_and_metrics_needs_one_once_tokens_exist(
        api: ServedApi) -> None:
    with api.client(token=None) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        assert client.get("/metrics").status_code == 401
    with api.client() as client:
        assert client.get("/metrics").status_code == 200


def test_unresolvable_token_reference_refuses_to_build_the_api(
    store: SqlStore, store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RECONCILE_TEST_NO_SUCH_TOKEN", raising=False)
    settings = settings_for(store_url, "env:RECONCILE_TEST_NO_SUCH_TOKEN")
    with pytest.raises(ApiTokenError) as caught:
        create_api(store, settings, DaemonMetrics(), ConfigHolder())
    message = str(caught.value)
    assert "RECONCILE_TEST_NO_SUCH_TOKEN" in message
    assert "is not set" in message and "does not start" in message
    assert isinstance(caught.value, SecretError)  # the CLI prints it as one line


def test_literal_or_empty_token_is_refused_without_echoing_it(
    store: SqlStore, store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    literal = "plain-literal-token-abcdef123456"
    with pytest.raises(ApiTokenError) as caught:
        create_api(store, settings_for(store_url, literal), DaemonMetrics(), ConfigHolder())
    assert "not a secret reference" in str(caught.value)
    assert literal not in str(caught.value)
    monkeypatch.setenv("RECONCILE_TEST_EMPTY_TOKEN", "  ")
    with pytest.raises(ApiTokenError, match="empty"):
        create_api(store, settings_for(store_url, "env:RECONCILE_TEST_EMPTY_TOKEN"),
                   DaemonMetrics(), ConfigHolder())


def test_token_never_appears_in_responses_or_logs(
    serve_api: ServeApi, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    served = serve_api(max_body_bytes=4096)
    wrong = TOKEN + "-wrong"
    responses: list[httpx.Response] = []
    with served.client() as client:
        responses += [
            client.post("/v1/notifications", json=notification(1, idempotencyKey="k1")),
            client.post("/v1/notifications", json=notification(1, idempotencyKey="k1")),
            client.post("/v1/notifications", json=notification(2, subject="a\r\nBcc: x@y.z")),
            client.post("/v1/notifications", json=notification(3, textBody="x" * 8000)),
            client.get("/v1/notifications/999"),
            client.get("/v1/audit", params={"status": "NOPE"}),
            client.get("/v1/status"),
            client.get("/metrics"),
            client.get("/openapi.json"),
            client.post("/v1/notifications", json=notification(4), headers=auth(wrong)),
            client.get("/v1/status", headers=auth(wrong)),
        ]
    assert [r.status_code for r in responses] == [
        202, 200, 422, 413, 404, 422, 200, 200, 200, 401, 401]
    for response in responses:
        shown = response.text + json.dumps(dict(response.headers))
        assert TOKEN not in shown and wrong not in shown
    assert caplog.records, "uvicorn's access log should have been captured"
    assert TOKEN not in caplog.text
    assert "Your request was updated" not in caplog.text  # no request body is logged


# -- intake: validation ------------------------------------------------------------

BAD_BODIES: list[tuple[str, dict[str, Any], str, str]] = [
    ("missing module", {k: v for k, v in notification().items() if k != "module"},
     "module", "required"),
    ("to is not a list", notification(to="jane@example.com, joe@example.com"), "to", "array"),
    ("bad email", notification(to=["not-an-email"]), "to[0].email", "not a valid email"),
    ("bad email object", notification(cc=[{"email": "jane@"}]), "cc[0].email",
     "not a valid email"),
    ("CR/LF in subject", notification(subject="Hi\r\nBcc: victim@example.com"), "subject",
     "line break"),
    ("LF in display name", notification(to=[{"email": "a@example.com", "name": "A\nBcc: x"}]),
     "to[0].name", "line break"),
    ("CR/LF in address", notification(bcc=["a@example.com\r\nBcc: x@example.com"]), "bcc[0]",
     "line break"),
    ("reserved header", notification(headers={"Bcc": "x@example.com"}), "headers.Bcc.[key]",
     "set by the dispatcher"),
    ("unknown field", notification(priority="high"), "priority", "not permitted"),
    ("bad attachment data", notification(attachments=[{"name": "a.txt", "data": "%%%"}]),
     "attachments[0].data", "base64"),
    ("bad namespace name", notification(namespace="Not A Name"), "namespace",
     "not a valid resource name"),
    ("unknown namespace", notification(namespace="globex"), "namespace", "not configured"),
]


@pytest.mark.parametrize(("body", "field", "words"),
                         [case[1:] for case in BAD_BODIES], ids=[c[0] for c in BAD_BODIES])
def test_bad_payload_is_422_naming_the_field(
    api: ServedApi, body: dict[str, Any], field: str, words: str
) -> None:
    response = post(api, body)
    assert response.status_code == 422, response.text
    problems = response.json()["detail"]
    named = [p for p in problems if p["field"] == field]
    assert named, problems
    assert words.lower() in named[0]["msg"].lower(), named[0]
    assert named[0]["loc"][0] == "body"
    with reopened(api) as fresh:
        assert fresh.outbox.depth()[OutboxState.QUEUED] == 0


def test_body_that_is_not_json_is_422(api: ServedApi) -> None:
    with api.client() as client:
        broken = client.post("/v1/notifications", content=b"{not json",
                             headers={"Content-Type": "application/json"})
        empty = client.post("/v1/notifications")
    for response in (broken, empty):
        assert response.status_code == 422
        assert response.json()["detail"][0]["type"] == "json_invalid"


def test_intake_before_the_first_config_load_is_503(serve_api: ServeApi) -> None:
    served = serve_api(config=ConfigHolder())
    response = post(served, notification())
    assert response.status_code == 503
    assert "Retry-After" in response.headers


# -- intake: accepted, durable, idempotent ---------------------------------------------


def test_accepted_is_202_and_stored_durably(api: ServedApi) -> None:
    data = bytes(range(256)) * 8
    body = notification(7, attachments=[{"name": "log.bin", "contentType": "application/zip",
                                         "data": base64.b64encode(data).decode()}],
                        headers={"In-Reply-To": "<abc@desk.example>"}, namespace="acme")
    response = post(api, body)
    assert response.status_code == 202, response.text
    answer = response.json()
    assert answer["duplicate"] is False and answer["status"] == "queued"
    assert response.headers["Location"] == f"/v1/notifications/{answer['id']}"
    with reopened(api) as fresh:
        message = fresh.outbox.get(answer["id"])
        assert message is not None
        assert (message.state, message.namespace, message.module, message.attempts) == (
            OutboxState.QUEUED, "acme", "requests", 0)
        stored = fresh.outbox.notification(answer["id"])
    assert stored["subject"] == "[Request ##RE-7##] updated"
    assert stored["to"] == [{"email": "requester7@example.com", "name": "Requester 7"}]
    assert stored["headers"] == {"In-Reply-To": "<abc@desk.example>"}
    assert stored["attachments"][0]["data"] == data
    assert stored["attachments"][0]["contentType"] == "application/zip"


def test_large_body_is_parsed_off_the_event_loop_and_stored_intact(api: ServedApi) -> None:
    data = bytes(i % 251 for i in range(600_000))  # over PARSE_IN_THREAD_BYTES once encoded
    body = notification(8, attachments=[{"name": "scan.pdf", "contentType": "application/pdf",
                                         "data": base64.b64encode(data).decode()}])
    response = post(api, body)
    assert response.status_code == 202, response.text
    with reopened(api) as fresh:
        stored = fresh.outbox.notification(response.json()["id"])
    assert stored["attachments"][0]["data"] == data


def test_notification_without_recipients_is_accepted_for_the_audit(api: ServedApi) -> None:
    # SPEC O8: "recipients list is empty" is an audited SEND_FAILED, not an intake error.
    body = {k: v for k, v in notification().items() if k not in ("to", "cc")}
    assert post(api, body).status_code == 202


def test_same_idempotency_key_gives_the_same_id_marked_duplicate(api: ServedApi) -> None:
    first = post(api, notification(1, idempotencyKey="ticket-42-closed"))
    again = post(api, notification(2, idempotencyKey="ticket-42-closed"))
    elsewhere = post(api, notification(1, idempotencyKey="ticket-42-closed", namespace="acme"))
    assert (first.status_code, again.status_code, elsewhere.status_code) == (202, 200, 202)
    assert again.json() == {"id": first.json()["id"], "duplicate": True, "status": "queued"}
    assert elsewhere.json()["id"] != first.json()["id"]
    with reopened(api) as fresh:
        assert fresh.outbox.depth()[OutboxState.QUEUED] == 2
        kept = fresh.outbox.notification(first.json()["id"])
    assert kept["subject"] == "[Request ##RE-1##] updated"  # the first one wins


def test_duplicate_reports_the_current_state_of_the_first(api: ServedApi) -> None:
    first = post(api, notification(1, idempotencyKey="k-sent")).json()
    [claimed] = api.store.outbox.claim("someone", 10, 60)
    api.store.outbox.complete(claimed.id, "someone", OutboxState.SENT)
    again = post(api, notification(1, idempotencyKey="k-sent"))
    assert again.status_code == 200
    assert again.json() == {"id": first["id"], "duplicate": True, "status": "sent"}


def test_acceptance_wakes_the_daemons_worker(api: ServedApi) -> None:
    woken: list[int] = []
    api.app.state.wake_worker = lambda: woken.append(1)
    post(api, notification(1, idempotencyKey="wake-1"))
    post(api, notification(1, idempotencyKey="wake-1"))  # a duplicate: nothing new to send
    post(api, notification(2, subject="bad\nsubject"))
    assert woken == [1]


async def _post_all(url: str, bodies: Sequence[dict[str, Any]], clients: int
                    ) -> list[httpx.Response]:
    queue: asyncio.Queue[tuple[int, dict[str, Any]]] = asyncio.Queue()
    for item in enumerate(bodies):
        queue.put_nowait(item)
    out: list[httpx.Response | None] = [None] * len(bodies)

    async def client_loop() -> None:
        async with httpx.AsyncClient(base_url=url, headers=auth(), timeout=60.0) as client:
            while not queue.empty():
                index, body = queue.get_nowait()
                out[index] = await client.post("/v1/notifications", json=body)

    await asyncio.gather(*(client_loop() for _ in range(clients)))
    assert all(r is not None for r in out)
    return [r for r in out if r is not None]


def test_concurrent_posts_are_all_durable_with_distinct_ids(api: ServedApi) -> None:
    bodies = [notification(i, idempotencyKey=f"n-{i}") for i in range(200)]
    responses = asyncio.run(_post_all(api.url, bodies, clients=20))
    assert [r.status_code for r in responses] == [202] * 200
    ids = [r.json()["id"] for r in responses]
    assert len(set(ids)) == 200
    with reopened(api) as fresh:
        assert fresh.outbox.depth()[OutboxState.QUEUED] == 200
        for i, message_id in enumerate(ids):
            message = fresh.outbox.get(message_id)
            assert message is not None and message.idempotency_key == f"n-{i}"
    stats = api.app.state.intake.stats
    assert stats.messages == 200 and stats.failed_batches == 0


def test_concurrent_posts_with_one_key_store_one_notification(api: ServedApi) -> None:
    bodies = [notification(i, idempotencyKey="same-key") for i in range(40)]
    responses = asyncio.run(_post_all(api.url, bodies, clients=20))
    answers = [r.json() for r in responses]
    assert len({a["id"] for a in answers}) == 1
    assert sorted(r.status_code for r in responses) == [200] * 39 + [202]
    assert sum(not a["duplicate"] for a in answers) == 1
    with reopened(api) as fresh:
        assert fresh.outbox.depth()[OutboxState.QUEUED] == 1


class _DownOutbox:
    """An outbox whose database is gone: every write fails."""

    def __init__(self, real: Any) -> None:
        self._real = real

    def enqueue_many(self, requests: Sequence[EnqueueRequest], **_: Any) -> list[Any]:
        raise StoreUnavailable("cannot connect to the PostgreSQL store (test)")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


class _DownStore:
    def __init__(self, real: SqlStore) -> None:
        self._real = real
        self.outbox = _DownOutbox(real.outbox)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def test_store_failure_is_503_and_nothing_is_claimed_accepted(
    serve_api: ServeApi, store: SqlStore
) -> None:
    served = serve_api(api_store=_DownStore(store))
    response = post(served, notification())
    assert response.status_code == 503
    assert "NOT accepted" in response.json()["detail"]
    assert response.headers["Retry-After"]


# -- reading: notification, audit, status, metrics, OpenAPI --------------------------


def test_get_notification_shows_state_attempts_and_redacted_error(api: ServedApi) -> None:
    accepted = post(api, notification(1, idempotencyKey="k-1")).json()
    [claimed] = api.store.outbox.claim("worker-a", 10, 60)
    api.store.outbox.schedule_retry(
        claimed.id, "worker-a", datetime.now(UTC) + timedelta(minutes=5),
        "421 try later (AUTH PLAIN dXNlcjpodW50ZXIy rejected, password=hunter2)")
    with api.client() as client:
        found = client.get(f"/v1/notifications/{accepted['id']}")
        missing = client.get("/v1/notifications/987654")
        bad = client.get("/v1/notifications/zero")
    assert found.status_code == 200
    view = found.json()
    assert (view["id"], view["state"], view["attempts"], view["namespace"],
            view["idempotencyKey"]) == (accepted["id"], "retry_wait", 1, "default", "k-1")
    assert view["lastError"].startswith("421 try later")
    assert "hunter2" not in found.text and "dXNlcjpodW50ZXIy" not in found.text
    assert missing.status_code == 404
    assert bad.status_code == 422 and bad.json()["detail"][0]["field"] == "id"


T0 = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)


def _seed_audit(store: SqlStore) -> None:
    def at(minutes: int) -> datetime:
        return T0 + timedelta(minutes=minutes)

    store.audit.record([
        AuditEntry(AuditStatus.SENT, "250 OK", server="gmail", host="smtp.gmail.com:587",
                   attempt=1, recipient="Jane@Example.com", message_id="<m1@desk.example>",
                   outbox_id=1, module="requests", created_at=at(0)),
        AuditEntry(AuditStatus.SEND_IGNORED, "recipient filter corp-only", server="gmail",
                   recipient="mallory@outside.example", outbox_id=1, created_at=at(1)),
        AuditEntry(AuditStatus.RETRYING, "421 try later", server="o365", attempt=1,
                   recipient="jane@example.com", outbox_id=2, created_at=at(2)),
        AuditEntry(AuditStatus.SEND_FAILED, "recipients list is empty", namespace="acme",
                   outbox_id=3, created_at=at(3)),
        AuditEntry(AuditStatus.SENT, "250 OK", server="o365", attempt=2,
                   recipient="jane@example.com", outbox_id=2, created_at=at(4),
                   details={"droppedAttachments": [{"name": "big.iso", "size": 1}]}),
        AuditEntry(AuditStatus.RECEIVED, "fetched", server="imap-desk",
                   recipient="desk@example.com", created_at=at(5)),
    ])


@pytest.mark.parametrize(("params", "reasons"), [
    ({}, ["fetched", "250 OK", "recipients list is empty", "421 try later",
          "recipient filter corp-only", "250 OK"]),
    ({"status": "SENT"}, ["250 OK", "250 OK"]),
    ({"status": ["RETRYING", "SEND_FAILED"]}, ["recipients list is empty", "421 try later"]),
    ({"recipient": "JANE@example.com"}, ["250 OK", "421 try later", "250 OK"]),
    ({"server": "gmail"}, ["recipient filter corp-only", "250 OK"]),
    ({"since": "2024-06-01T12:02:00Z", "until": "2024-06-01T12:03:00Z"},
     ["recipients list is empty", "421 try later"]),
    ({"until": "2024-06-01T12:00:00"}, ["250 OK"]),  # no zone: UTC
    ({"direction": "incoming"}, ["fetched"]),
    ({"namespace": "acme"}, ["recipients list is empty"]),
    ({"outboxId": 2}, ["250 OK", "421 try later"]),
    ({"messageId": "m1@desk.example"}, ["250 OK"]),
    ({"limit": 2, "offset": 1}, ["250 OK", "recipients list is empty"]),
], ids=["all", "status", "statuses", "recipient", "server", "since-until", "naive-until",
        "direction", "namespace", "outbox", "message-id", "paging"])
def test_audit_filters(api: ServedApi, params: dict[str, Any], reasons: list[str]) -> None:
    _seed_audit(api.store)
    with api.client() as client:
        response = client.get("/v1/audit", params=params)
    assert response.status_code == 200, response.text
    assert [e["reason"] for e in response.json()] == reasons


def test_audit_entry_shape(api: ServedApi) -> None:
    _seed_audit(api.store)
    with api.client() as client:
        [entry] = client.get("/v1/audit", params={"outboxId": 2, "limit": 1}).json()
    assert entry == {
        "id": entry["id"], "time": "2024-06-01T12:04:00Z", "status": "SENT",
        "direction": "outgoing", "reason": "250 OK", "namespace": "default",
        "server": "o365", "host": None, "attempt": 2, "recipient": "jane@example.com",
        "messageId": None, "outboxId": 2, "module": None,
        "details": {"droppedAttachments": [{"name": "big.iso", "size": 1}]},
    }


@pytest.mark.parametrize(("params", "field"), [
    ({"status": "DELIVERED"}, "status"), ({"direction": "sideways"}, "direction"),
    ({"since": "yesterday"}, "since"), ({"limit": 0}, "limit"), ({"offset": -1}, "offset"),
])
def test_audit_bad_filter_is_422_naming_it(
    api: ServedApi, params: dict[str, Any], field: str
) -> None:
    with api.client() as client:
        response = client.get("/v1/audit", params=params)
    assert response.status_code == 422
    # a repeatable parameter is named with its index: status[0]
    assert [p["field"].split("[")[0] for p in response.json()["detail"]] == [field]
    assert "input" not in response.json()["detail"][0]


def test_status_reports_config_worker_outbox_and_server_statuses(api: ServedApi) -> None:
    key = ResourceKey("OutgoingServer", "default", "default-main")
    api.store.status_put(key, {"health": "Unreachable",
                               "lastError": "connect failed, password=hunter2",
                               "credentials": {"secretRef": "env:SMTP_PASSWORD"}})
    post(api, notification(1))
    with api.client() as client:
        status = client.get("/v1/status").json()
        finished = client.get("/v1/status", params={"finished": "true"}).json()
    assert status["configRevision"] == api.config.current.revision >= 1
    assert status["workerId"] == WORKER_ID
    assert status["namespaces"] == ["acme", "default"]
    assert status["outbox"] == {"queued": 1, "leased": 0, "retry_wait": 0, "held": 0}
    assert set(finished["outbox"]) == {s.value for s in OutboxState}
    assert status["statuses"] == [{
        "kind": "OutgoingServer", "namespace": "default", "name": "default-main",
        "status": {"health": "Unreachable", "lastError": "connect failed, password=***",
                   "credentials": {"secretRef": "env:SMTP_PASSWORD"}},
    }]
    assert status["intake"]["messages"] == 1
    assert status["version"]


def test_status_reports_incoming_servers_and_ticket_events(api: ServedApi) -> None:
    IncomingStore.of_store(api.store).fetch_failed(
        "default", "desk-imap", "auth", "LOGIN failed for desk, password=hunter2")
    with api.client() as client:
        status = client.get("/v1/status").json()
    [server] = status["incoming"]
    assert (server["namespace"], server["server"], server["consecutiveFailures"],
            server["lastErrorKind"], server["errorFolderCount"], server["paused"]) == (
        "default", "desk-imap", 1, "auth", 0, None)
    assert "hunter2" not in server["lastError"] and "LOGIN failed" in server["lastError"]
    assert server["lastFetch"] and server["lastSuccess"] is None
    assert status["ticketEvents"] == {"pending": 0, "delivered": 0, "rejected": 0}


def test_metrics_are_prometheus_text_with_queue_depth_from_the_outbox(api: ServedApi) -> None:
    for i in range(3):
        post(api, notification(i, namespace="acme"))
    api.store.outbox.claim("worker-b", 1, 60)
    with api.client() as client:
        response = client.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(response.text)}
    depth = {s.labels["state"]: s.value for s in families["reconcile_outbox_messages"].samples}
    assert depth == {"queued": 2.0, "leased": 1.0, "retry_wait": 0.0, "held": 0.0}
    accepted = [s for s in families["reconcile_intake_accepted"].samples
                if s.name == "reconcile_intake_accepted_total"]
    assert [(s.labels, s.value) for s in accepted] == [({"namespace": "acme"}, 3.0)]
    [revision] = families["reconcile_config_revision"].samples
    assert revision.value == api.config.current.revision


def test_openapi_document_describes_the_api(api: ServedApi) -> None:
    with api.client(token=None) as client:
        document = client.get("/openapi.json").json()
    assert document["info"]["title"] == "reconcile dispatch API"
    assert document["info"]["version"]
    paths = document["paths"]
    assert {p: sorted(paths[p]) for p in paths} == {
        "/v1/notifications": ["post"], "/v1/notifications/{id}": ["get"],
        "/v1/audit": ["get"], "/v1/status": ["get"], "/metrics": ["get"],
        "/healthz": ["get"], "/v1/events": ["get"], "/v1/events/ack": ["post"],
        "/v1/events/{id}/attachments/{sha256}": ["get"],
        "/v1/sync": ["get"], "/v1/sync/webhook": ["post"],
        "/v1/outbox": ["get"], "/v1/outbox/{id}": ["get"],
        "/v1/outbox/actions/{action}": ["post"],
    }
    # GitHub signs its webhook (HMAC) instead of sending a bearer token
    assert "security" not in paths["/v1/sync/webhook"]["post"]
    assert paths["/v1/sync"]["get"]["security"] == [{"HTTPBearer": []}]
    intake = paths["/v1/notifications"]["post"]
    assert intake["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Notification"}
    assert {"200", "202", "401", "413", "422", "503"} <= set(intake["responses"])
    assert intake["security"] == [{"HTTPBearer": []}]
    # it names every namespace's servers: a token, once any is configured
    assert paths["/metrics"]["get"]["security"] == [{"HTTPBearer": []}]
    assert "security" not in paths["/healthz"]["get"]
    schemas = document["components"]["schemas"]
    body = schemas["Notification"]
    assert {"module", "namespace", "to", "cc", "bcc", "subject", "textBody", "htmlBody",
            "attachments", "idempotencyKey", "ticket"} <= set(body["properties"])
    assert all(prop.get("description") for prop in body["properties"].values())
    assert schemas["Attachment"]["properties"]["data"]["type"] == "string"
    assert set(schemas["TicketLink"]["properties"]) == {"module", "id"}
    assert schemas["Accepted"]["properties"]["duplicate"]["description"]
    assert document["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"


# -- body size limit -------------------------------------------------------------------


def _raw_exchange(url: str, head: bytes, body: bytes = b"") -> bytes:
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        sock.sendall(head + body)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    return received


def test_body_over_the_limit_is_413_and_not_stored(serve_api: ServeApi) -> None:
    served = serve_api(max_body_bytes=64 * 1024)
    big = notification(1, textBody="x" * 100_000)
    response = post(served, big)
    assert response.status_code == 413
    assert "limit of 65536 bytes" in response.json()["detail"]
    assert post(served, notification(2, textBody="y" * 30_000)).status_code == 202
    with reopened(served) as fresh:
        assert fresh.outbox.depth()[OutboxState.QUEUED] == 1


def test_declared_length_over_the_default_limit_is_refused_before_reading(
    api: ServedApi
) -> None:
    assert DEFAULT_MAX_BODY_BYTES == 50 * 1024 * 1024
    head = (f"POST /v1/notifications HTTP/1.1\r\nHost: localhost\r\n"
            f"Authorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {DEFAULT_MAX_BODY_BYTES + 1}\r\n\r\n").encode()
    answer = _raw_exchange(api.url, head, b"{")
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]


def test_chunked_body_is_cut_off_at_the_limit(serve_api: ServeApi) -> None:
    served = serve_api(max_body_bytes=1000)
    head = (f"POST /v1/notifications HTTP/1.1\r\nHost: localhost\r\n"
            f"Authorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\n"
            f"Transfer-Encoding: chunked\r\n\r\n").encode()
    chunk = b" " * 600
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(2)) + b"0\r\n\r\n"
    answer = _raw_exchange(served.url, head, body)
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]


# -- group commit (no server needed) ---------------------------------------------------


class _RecordingOutbox:
    def __init__(self, fail_on: str | None = None) -> None:
        self.batches: list[list[str]] = []
        self.fail_on = fail_on

    def enqueue_many(self, requests: Sequence[EnqueueRequest], **_: Any) -> list[EnqueueResult]:
        keys = [str(r.idempotency_key) for r in requests]
        self.batches.append(keys)
        if self.fail_on in keys:
            raise ValueError(f"cannot store {self.fail_on}")
        return [EnqueueResult(int(k.split("-")[1]), False) for k in keys]


def _request(i: int) -> EnqueueRequest:
    return EnqueueRequest({"module": "m"}, "default", f"k-{i}")


def test_group_commit_stores_concurrent_submissions_together() -> None:
    outbox = _RecordingOutbox()

    async def main() -> list[EnqueueResult]:
        committer = GroupCommitter(outbox)  # type: ignore[arg-type]
        try:
            return await asyncio.gather(*(committer.submit(_request(i)) for i in range(50)))
        finally:
            await committer.aclose()

    results = asyncio.run(main())
    assert [r.id for r in results] == list(range(50))
    assert sum(len(b) for b in outbox.batches) == 50
    assert len(outbox.batches) < 50  # they shared transactions
    assert max(len(b) for b in outbox.batches) > 1
    # rows go in key order (no lock-order deadlocks), answers to their own callers
    assert all(batch == sorted(batch) for batch in outbox.batches)


def test_group_commit_isolates_a_bad_submission_from_its_batch() -> None:
    outbox = _RecordingOutbox(fail_on="k-3")

    async def main() -> list[EnqueueResult | BaseException]:
        committer = GroupCommitter(outbox, window=0.01)  # type: ignore[arg-type]
        try:
            return await asyncio.gather(*(committer.submit(_request(i)) for i in range(6)),
                                        return_exceptions=True)
        finally:
            await committer.aclose()

    results = asyncio.run(main())
    assert isinstance(results[3], ValueError)
    assert [r.id for i, r in enumerate(results) if i != 3] == [0, 1, 2, 4, 5]  # type: ignore[union-attr]


def test_group_commit_fails_every_waiter_when_the_store_is_down() -> None:
    class Down:
        calls = 0

        def enqueue_many(self, requests: Sequence[EnqueueRequest], **_: Any) -> list[Any]:
            Down.calls += 1
            raise StoreUnavailable("store down")

    async def main() -> list[EnqueueResult | BaseException]:
        committer = GroupCommitter(Down(), window=0.01)  # type: ignore[arg-type]
        try:
            return await asyncio.gather(*(committer.submit(_request(i)) for i in range(5)),
                                        return_exceptions=True)
        finally:
            await committer.aclose()

    results = asyncio.run(main())
    assert all(isinstance(r, StoreUnavailable) for r in results)
    assert Down.calls == 1  # not retried one by one against a store that is down


def test_group_commit_drain_waits_for_pending_writes() -> None:
    outbox = _RecordingOutbox()

    async def main() -> None:
        committer = GroupCommitter(outbox, window=0.05)  # type: ignore[arg-type]
        tasks = [asyncio.create_task(committer.submit(_request(i))) for i in range(3)]
        await asyncio.sleep(0)
        await committer.aclose()
        assert all(t.done() for t in tasks)

    asyncio.run(main())
    assert outbox.batches == [["k-0", "k-1", "k-2"]]


def test_live_config_helper_loads_namespaces(store: SqlStore) -> None:
    assert sorted(live_config(store).current.namespaces) == ["acme", "default"]
