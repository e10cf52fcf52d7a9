"""POST /v1/notifications with a ticket reference (issue 6: replies thread to it by their
headers), through a real uvicorn on SQLite and PostgreSQL."""

# The fixtures come from api_kit (tests/daemon has no conftest of its own);
# using them as parameters looks like a redefinition to the linter.
# ruff: noqa: F811

from __future__ import annotations

import pytest

from reconciler.state import open_store
from reconciler.state.base import OutboxState

from .api.api_kit import (  # noqa: F401  (api and serve_api are fixtures)
    TOKEN,
    ServedApi,
    api,
    notification,
    serve_api,
)


def test_the_ticket_is_stored_with_the_notification(api: ServedApi) -> None:
    body = notification(1, ticket={"module": "change", "id": "007"})
    with api.client(TOKEN) as client:
        response = client.post("/v1/notifications", json=body)
    assert response.status_code == 202, response.text
    with open_store(api.store_url) as fresh:
        stored = fresh.outbox.notification(response.json()["id"])
    assert stored["ticket"] == {"module": "change", "id": "7"}


@pytest.mark.parametrize(("ticket", "field", "says"), [
    ({"module": "request"}, "ticket.id", "Field required"),
    ({"module": "request", "id": "12\r\nBcc: x@evil.example"}, "ticket.id",
     "ticket id must be 1-32 letters"),
    ({"module": "", "id": "12"}, "ticket.module", "ticket module must be a word"),
    ({"module": "request", "id": "12", "number": "12"}, "ticket.number", "Extra inputs"),
])
def test_a_bad_ticket_is_422_naming_the_field(api: ServedApi, ticket: dict[str, str],
                                              field: str, says: str) -> None:
    with api.client(TOKEN) as client:
        response = client.post("/v1/notifications", json=notification(1, ticket=ticket))
    assert response.status_code == 422, response.text
    [problem] = response.json()["detail"]
    assert problem["field"] == field and says in problem["msg"]
    with open_store(api.store_url) as fresh:
        assert fresh.outbox.depth()[OutboxState.QUEUED] == 0
