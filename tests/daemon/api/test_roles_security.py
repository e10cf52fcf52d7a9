"""The API's roles and namespace scopes probed as a hostile tenant would: totals that
count other tenants, acting on another namespace's ids, tokens in answers and logs."""
# The role fixtures come from test_roles (imported, no conftest of our own), so
# parameters named like them look like redefinitions to ruff.
# ruff: noqa: F811

from __future__ import annotations

import logging

import httpx
import pytest

from reconciler.state.base import OutboxState

from .api_kit import notification
from .test_roles import RoleApi, roles, start_roles  # noqa: F401


def _submit(roles: RoleApi, namespace: str) -> int:
    response = roles.call("admin", "POST", "/v1/notifications", notification(namespace=namespace))
    assert response.status_code == 202, response.text
    return int(response.json()["id"])


def test_status_gives_a_limited_token_no_daemon_wide_intake_counts(roles: RoleApi) -> None:
    for _ in range(3):
        _submit(roles, "default")
    limited = roles.call("acme-viewer", "GET", "/v1/status")
    assert limited.status_code == 200
    assert limited.json()["intake"] is None  # 3 default mails would show as "messages: 3"
    whole = roles.call("viewer", "GET", "/v1/status").json()
    assert whole["intake"]["messages"] == 3


def test_a_limited_operator_cannot_act_on_another_namespaces_ids(roles: RoleApi) -> None:
    theirs = _submit(roles, "default")
    for body in ({"ids": [theirs]}, {"ids": [theirs], "namespace": "acme"},
                 {"allDeferred": True}, {"allHeld": True}):
        reply = roles.call("acme-operator", "POST", "/v1/outbox/actions/hold", body)
        assert reply.status_code in (404, 409), (body, reply.text)
        assert "default" not in reply.text
    named = roles.call("acme-operator", "POST", "/v1/outbox/actions/hold",
                       {"ids": [theirs], "namespace": "default"})
    assert named.status_code == 404
    assert roles.store.outbox.get(theirs).state is OutboxState.QUEUED  # type: ignore[union-attr]


def test_a_limited_operator_cannot_acknowledge_another_namespaces_events(
        roles: RoleApi) -> None:
    reply = roles.call("acme-operator", "POST", "/v1/events/ack",
                       {"through": 10**6, "namespace": "default"})
    assert reply.status_code in (200, 404)
    if reply.status_code == 200:
        assert reply.json()["acknowledged"] == 0


@pytest.mark.parametrize("presented", ["{token}\u00e9", "{token}x", "x{token}",
                                       "{token}{token}"])
def test_a_near_miss_token_is_a_401_that_never_echoes_it(
        roles: RoleApi, caplog: pytest.LogCaptureFixture, presented: str) -> None:
    token = roles.tokens["admin"]
    given = presented.format(token=token)
    caplog.set_level(logging.DEBUG)
    with httpx.Client(base_url=roles.url, timeout=30.0) as client:
        reply = client.get("/v1/status",
                           headers={"Authorization": f"Bearer {given}".encode()})
    assert reply.status_code == 401
    assert token not in reply.text
    daemon_side = [r for r in caplog.records if not r.name.startswith(("httpx", "httpcore"))]
    assert daemon_side and all(token not in r.getMessage() for r in daemon_side)


def test_a_sender_reads_nothing_of_its_own_namespace(roles: RoleApi) -> None:
    mine = _submit(roles, "acme")
    for path in (f"/v1/notifications/{mine}", f"/v1/outbox/{mine}", "/v1/outbox",
                 "/v1/audit", "/v1/events", "/v1/status"):
        reply = roles.call("acme-sender", "GET", path)
        assert reply.status_code == 403, path
        assert "acme" not in reply.text
