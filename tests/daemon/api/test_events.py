"""GET /v1/events, POST /v1/events/ack and attachment bytes: the desk pulls ticket
events from the store (I8), bearer-guarded like the rest of /v1."""
# Fixtures are imported from the kits (no conftest of our own), so parameters
# named like them look like redefinitions to ruff.
# ruff: noqa: F811

from __future__ import annotations

import hashlib

from incoming.incoming_kit import corpus, record_mail

from reconciler.state import SqlStore

from .api_kit import ServedApi, api, serve_api  # noqa: F401 - fixtures

MAILS = ("01-new-request-plain.eml", "10-alternative-text-html.eml",
         "13-attachments-pdf-docx.eml")


def fill(store: SqlStore) -> None:
    for i, name in enumerate(MAILS):
        record_mail(store, corpus(name), f"imap:INBOX:1:{i + 1}")


def test_events_need_a_token(api: ServedApi) -> None:
    with api.client(token=None) as client:
        assert client.get("/v1/events").status_code == 401
        assert client.post("/v1/events/ack", json={"through": 1}).status_code == 401


def test_events_come_oldest_first_with_a_cursor(api: ServedApi) -> None:
    fill(api.store)
    with api.client() as client:
        first = client.get("/v1/events", params={"limit": 2}).json()
        assert [e["id"] for e in first["events"]] == [1, 2]
        assert first["more"] is True and first["next"] == 2
        assert first["events"][0]["event"]["kind"] == "create"
        assert first["events"][0]["state"] == "pending"
        rest = client.get("/v1/events", params={"after": first["next"]}).json()
        assert [e["id"] for e in rest["events"]] == [3] and rest["more"] is False
        subjects = [e["event"]["subject"] for e in first["events"] + rest["events"]]
        assert len(set(subjects)) == 3


def test_ack_marks_delivered_and_moves_the_default_cursor(api: ServedApi) -> None:
    fill(api.store)
    with api.client() as client:
        acked = client.post("/v1/events/ack", json={"through": 2})
        assert acked.status_code == 200 and acked.json() == {"acknowledged": 2}
        page = client.get("/v1/events").json()  # no `after`: after the acknowledged ones
        assert [e["id"] for e in page["events"]] == [3]
        delivered = client.get("/v1/events", params={"after": 0, "state": "delivered"}).json()
        assert [e["id"] for e in delivered["events"]] == [1, 2]
        assert all(e["deliveredAt"] for e in delivered["events"])
        assert client.post("/v1/events/ack", json={"through": "x"}).status_code == 422


def test_attachment_bytes_by_sha256(api: ServedApi) -> None:
    fill(api.store)
    with api.client() as client:
        [event] = client.get("/v1/events", params={"after": 2}).json()["events"]
        listed = event["event"]["attachments"]
        assert listed, "the corpus mail has attachments"
        for item in listed:
            got = client.get(f"/v1/events/{event['id']}/attachments/{item['sha256']}")
            assert got.status_code == 200
            assert hashlib.sha256(got.content).hexdigest() == item["sha256"]
            assert len(got.content) == item["size"]
        missing = client.get(f"/v1/events/{event['id']}/attachments/{'0' * 64}")
        assert missing.status_code == 404


def test_the_openapi_document_describes_the_events_endpoints(api: ServedApi) -> None:
    with api.client(token=None) as client:
        document = client.get("/openapi.json").json()
    assert {"/v1/events", "/v1/events/ack",
            "/v1/events/{id}/attachments/{sha256}"} <= set(document["paths"])
    assert "events" in {t["name"] for t in document["tags"]}


def test_the_audit_api_filters_incoming_entries(api: ServedApi) -> None:
    fill(api.store)
    with api.client() as client:
        incoming = client.get("/v1/audit", params={"direction": "incoming"}).json()
        assert len(incoming) == 6 and {e["direction"] for e in incoming} == {"incoming"}
        processed = client.get("/v1/audit", params={
            "direction": "incoming", "status": "PROCESSED", "server": "support",
            "recipient": "Jane@Acme.Example"}).json()
        assert len(processed) == 3  # all three corpus mails come from Jane
        assert {e["details"]["code"] for e in processed} == {"create"}
        none = client.get("/v1/audit", params={"direction": "incoming",
                                               "until": "2000-01-01T00:00:00"}).json()
        assert none == []
