"""Every refused API request leaves one JSON log line: method, path, client, status and a
short reason, never the token, the body or the query string (a real uvicorn on loopback,
SQLite and PostgreSQL stores)."""

# ruff: noqa: F811  (fixtures from api_kit used as parameters)

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from reconciler.daemon.logs import JsonFormatter

from .api_kit import (  # noqa: F401  (api and serve_api are fixtures)
    TOKEN,
    ServeApi,
    ServedApi,
    api,
    auth,
    notification,
    serve_api,
)

SECRET_SUBJECT = "Quarterly salary review 7f3c-distinctive"


def refusal_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    """The refusal records as the daemon writes them: one JSON object per line."""
    formatter = JsonFormatter()
    lines = [formatter.format(r) for r in caplog.records if r.getMessage().startswith("refused ")]
    assert all("\n" not in line for line in lines)
    return [json.loads(line) for line in lines]


def test_each_refusal_is_one_json_line_with_status_and_reason(
    api: ServedApi, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="reconciler")
    guessed = TOKEN + "-guessed"
    bad_body = notification(to=["not an address"], subject=SECRET_SUBJECT)
    with api.client(token=None) as client:
        assert client.post("/v1/notifications", json=notification()).status_code == 401
        assert client.post("/v1/notifications", json=notification(),
                           headers=auth(guessed)).status_code == 401
    with api.client() as client:
        assert client.post("/v1/notifications", json=bad_body).status_code == 422
        assert client.post("/v1/notifications",
                           json=notification(namespace="nowhere")).status_code == 422
        assert client.get("/v1/audit?limit=0&recipient=secret-query@example.com"
                          ).status_code == 422
        assert client.post("/v1/notifications", json=notification(1)).status_code == 202

    lines = refusal_lines(caplog)
    assert [(x["method"], x["path"], x["client"], x["status"], x["reason"]) for x in lines] == [
        ("POST", "/v1/notifications", "127.0.0.1", 401, "no token"),
        ("POST", "/v1/notifications", "127.0.0.1", 401, "wrong token"),
        ("POST", "/v1/notifications", "127.0.0.1", 422, "invalid field: to[0].email"),
        ("POST", "/v1/notifications", "127.0.0.1", 422, "unknown namespace"),
        ("GET", "/v1/audit", "127.0.0.1", 422, "invalid field: limit"),
    ]
    assert all(x["level"] == "WARNING" for x in lines)
    assert lines[1]["message"] == "refused POST /v1/notifications from 127.0.0.1: wrong token"
    everything = caplog.text + "".join(json.dumps(x) for x in lines)
    for secret in (TOKEN, guessed, SECRET_SUBJECT, "not an address", "secret-query", "nowhere"):
        assert secret not in everything


def test_a_body_over_the_limit_is_logged_as_413(
    serve_api: ServeApi, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="reconciler")
    served = serve_api(max_body_bytes=2048)
    with served.client() as client:
        response = client.post("/v1/notifications",
                               json=notification(textBody=SECRET_SUBJECT * 200))
    assert response.status_code == 413
    [line] = refusal_lines(caplog)
    assert (line["status"], line["reason"], line["path"]) == (
        413, "request body over the size limit", "/v1/notifications")
    assert SECRET_SUBJECT not in caplog.text


def test_accepted_requests_leave_no_refusal_line(
    api: ServedApi, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="reconciler")
    with api.client() as client:
        assert client.post("/v1/notifications", json=notification(2)).status_code == 202
        assert client.get("/v1/notifications/999999").status_code == 404
        assert client.get("/v1/audit").status_code == 200
    assert refusal_lines(caplog) == []
