"""A client mistake in a parameter is a 422 naming it, never a 5xx (issue 11 item 5),
on SQLite and PostgreSQL; and the OpenAPI document states the bounds.

Ids, offsets and cursors are 64-bit in both stores: one past the largest used to
reach the driver (500 on SQLite, 503 on PostgreSQL). Times with an offset that
leaves years 1-9999 once in UTC, and NUL in a text filter (PostgreSQL text cannot
hold one), failed in the store too.
"""
# Fixtures are imported from the kit (no conftest of our own), so parameters named
# like them look like redefinitions to ruff.
# ruff: noqa: F811

from __future__ import annotations

from typing import Any

import pytest

from reconciler.state.base import OutboxState

from .api_kit import ServedApi, api, serve_api  # noqa: F401 - fixtures

INT64_MAX = 2**63 - 1
TOO_BIG = 2**63  # 9223372036854775808
SHA = "0" * 64


def _named(response: Any, field: str) -> dict[str, Any]:
    assert response.status_code == 422, (response.status_code, response.text)
    named = [p for p in response.json()["detail"] if p["field"] == field]
    assert named, response.json()
    return named[0]


@pytest.mark.parametrize(("path", "params", "field"), [
    ("/v1/audit", {"offset": TOO_BIG}, "offset"),
    ("/v1/audit", {"outboxId": TOO_BIG}, "outboxId"),
    ("/v1/audit", {"outboxId": -TOO_BIG - 1}, "outboxId"),
    ("/v1/notifications/{big}", {}, "id"),
    ("/v1/events", {"after": TOO_BIG}, "after"),
    ("/v1/events/{big}/attachments/" + SHA, {}, "id"),
], ids=["audit-offset", "audit-outbox-id", "audit-outbox-id-negative", "notification-id",
        "events-after", "attachment-event-id"])
def test_an_integer_past_the_stores_range_is_422_naming_it(
    api: ServedApi, path: str, params: dict[str, int], field: str
) -> None:
    with api.client() as client:
        response = client.get(path.format(big=TOO_BIG), params=params)
    problem = _named(response, field)
    assert problem["loc"][0] in ("query", "path")
    assert "input" not in problem


def test_an_ack_past_the_stores_range_is_422(api: ServedApi) -> None:
    with api.client() as client:
        response = client.post("/v1/events/ack", json={"through": TOO_BIG})
        assert _named(response, "through")["loc"] == ["body", "through"]
        # the largest id the store holds is fine: nothing to acknowledge yet
        largest = client.post("/v1/events/ack", json={"through": INT64_MAX})
    assert largest.status_code == 200, largest.text
    assert largest.json() == {"acknowledged": 0}


def test_the_largest_id_and_offset_are_answered_normally(api: ServedApi) -> None:
    with api.client() as client:
        assert client.get("/v1/audit", params={"offset": INT64_MAX}).json() == []
        assert client.get(f"/v1/notifications/{INT64_MAX}").status_code == 404
        page = client.get("/v1/events", params={"after": INT64_MAX})
        assert page.status_code == 200 and page.json()["events"] == []
        assert client.get(f"/v1/events/{INT64_MAX}/attachments/{SHA}").status_code == 404


@pytest.mark.parametrize(("params", "field", "words"), [
    ({"since": "0001-01-01T00:00:00+05:00"}, "since", "outside the years 1-9999"),
    ({"until": "9999-12-31T23:59:59-05:00"}, "until", "outside the years 1-9999"),
    ({"until": "0.5"}, "until", "not a number"),
    ({"since": "1700000000"}, "since", "not a number"),
])
def test_a_time_the_store_cannot_compare_is_422(
    api: ServedApi, params: dict[str, str], field: str, words: str
) -> None:
    with api.client() as client:
        response = client.get("/v1/audit", params=params)
    assert words in _named(response, field)["msg"]


def test_a_date_and_an_offset_time_are_accepted(api: ServedApi) -> None:
    with api.client() as client:
        for params in ({"since": "2024-06-01"}, {"until": "2024-06-01T12:00:00+02:00"},
                       {"until": "9999-12-31T23:59:59+05:00"}):
            response = client.get("/v1/audit", params=params)
            assert response.status_code == 200, (params, response.text)


@pytest.mark.parametrize(("path", "params", "field"), [
    ("/v1/audit", {"recipient": "a\x00@example.com"}, "recipient"),
    ("/v1/audit", {"server": "main\x00"}, "server"),
    ("/v1/audit", {"namespace": "\x00"}, "namespace"),
    ("/v1/audit", {"messageId": "<x\x00@desk>"}, "messageId"),
    ("/v1/events", {"namespace": "acme\x00"}, "namespace"),
])
def test_nul_in_a_text_filter_is_422(
    api: ServedApi, path: str, params: dict[str, str], field: str
) -> None:
    with api.client() as client:
        response = client.get(path, params=params)
    assert "NUL" in _named(response, field)["msg"]


def test_nul_in_the_ack_namespace_is_422(api: ServedApi) -> None:
    with api.client() as client:
        response = client.post("/v1/events/ack", json={"through": 1, "namespace": "a\x00"})
    assert _named(response, "namespace")["loc"] == ["body", "namespace"]


@pytest.mark.parametrize("body", [b"\xff\xfe{", b"{not json", b""],
                         ids=["not-utf8", "not-json", "empty"])
def test_ack_checks_the_token_before_the_body(api: ServedApi, body: bytes) -> None:
    with api.client(token=None) as client:
        response = client.post("/v1/events/ack", content=body,
                               headers={"Content-Type": "application/json"})
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize("body", [b"\xff\xfe{", b"{not json", b""],
                         ids=["not-utf8", "not-json", "empty"])
def test_ack_body_that_is_not_json_is_422_like_intake(api: ServedApi, body: bytes) -> None:
    with api.client() as client:
        response = client.post("/v1/events/ack", content=body,
                               headers={"Content-Type": "application/json"})
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["type"] == "json_invalid"


@pytest.mark.parametrize("through", [True, "5", 1.5])
def test_ack_through_must_be_a_json_integer(api: ServedApi, through: Any) -> None:
    with api.client() as client:
        response = client.post("/v1/events/ack", json={"through": through})
        _named(response, "through")
        whole = client.post("/v1/events/ack", json={"through": 5.0})  # an integer in JSON
    assert whole.status_code == 200, whole.text


def test_the_document_states_the_bounds_and_answers(api: ServedApi) -> None:
    with api.client(token=None) as client:
        document = client.get("/openapi.json").json()
    paths = document["paths"]
    schemas = document["components"]["schemas"]

    def param(path: str, name: str) -> dict[str, Any]:
        [found] = [p for p in paths[path]["get"]["parameters"] if p["name"] == name]
        return found["schema"]

    assert param("/v1/notifications/{id}", "id")["maximum"] == INT64_MAX
    assert param("/v1/audit", "offset")["maximum"] == INT64_MAX
    assert param("/v1/events", "after")["anyOf"][0]["maximum"] == INT64_MAX
    assert param("/v1/events/{id}/attachments/{sha256}", "id")["maximum"] == INT64_MAX
    until = param("/v1/audit", "until")["anyOf"]
    assert {s.get("format") for s in until} == {"date-time", "date", None}  # None: null
    ack = paths["/v1/events/ack"]["post"]
    assert ack["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Ack"}
    # an exact integer: FastAPI's own models would have made it a float (2**63)
    assert schemas["Ack"]["properties"]["through"]["maximum"] == INT64_MAX
    assert {"401", "413", "422", "503"} <= set(ack["responses"])
    ticket = schemas["TicketLink"]["properties"]
    assert ticket["id"]["pattern"] and ticket["module"]["pattern"]
    body = schemas["Notification"]["properties"]
    assert body["namespace"]["pattern"] and body["idempotencyKey"]["pattern"]
    assert schemas["Attachment"]["properties"]["data"]["contentEncoding"] == "base64"


@pytest.mark.parametrize(("fields", "field"), [
    ({"headers": {"X-Desk\n": "1"}}, "headers.X-Desk\n.[key]"),  # the name is what is wrong
    ({"ticket": {"module": "request", "id": "123\n"}}, "ticket.id"),
    ({"ticket": {"module": "request\n", "id": "123"}}, "ticket.module"),
    ({"idempotencyKey": "key-1\n"}, "idempotencyKey"),
    ({"namespace": "default\n"}, "namespace"),
    ({"attachments": [{"name": "a.txt", "contentType": "text/plain\n", "data": ""}]},
     "attachments[0].contentType"),
], ids=["header-name", "ticket-id", "ticket-module", "idempotency-key", "namespace",
        "content-type"])
def test_a_trailing_line_break_does_not_pass_a_pattern(
    api: ServedApi, fields: dict[str, Any], field: str
) -> None:
    # Python's "$" also matches before a final "\n"; the document's patterns do not.
    body = {"module": "requests", "to": ["jane@example.com"], "subject": "x", **fields}
    with api.client() as client:
        response = client.post("/v1/notifications", json=body)
        _named(response, field)
        assert client.get("/v1/audit").json() == []
    assert api.store.outbox.depth().get(OutboxState.QUEUED, 0) == 0
