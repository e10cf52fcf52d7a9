"""SPEC S3 over the real API: every endpoint checks the token's role (403 naming the
one needed) and keeps to its namespaces (another namespace's rows never show; its
items are 404), on SQLite and PostgreSQL."""
# Fixtures are imported from the kits (no conftest of our own), so parameters
# named like them look like redefinitions to ruff.

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from incoming.incoming_kit import SEAL_KEY, corpus, pipeline_context

from reconciler.daemon.api.factory import create_api
from reconciler.incoming.pipeline.run import process
from reconciler.incoming.store import IncomingStore, JudgedMail
from reconciler.runtime.access import Role, TokenSpec
from reconciler.runtime.metrics import DaemonMetrics
from reconciler.runtime.settings import DaemonSettings
from reconciler.state import SqlStore
from reconciler.state.base import AuditEntry, AuditStatus
from reconciler.state.outbox_control import QueueFilter

from .api_kit import WORKER_ID, live_config, notification, serve

# name -> (roles, namespaces); None: every namespace
PRINCIPALS: dict[str, tuple[tuple[Role, ...], tuple[str, ...] | None]] = {
    "sender": ((Role.SENDER,), None),
    "viewer": ((Role.VIEWER,), None),
    "auditor": ((Role.AUDITOR,), None),
    "operator": ((Role.OPERATOR,), None),
    "admin": ((Role.ADMIN,), None),
    "acme-sender": ((Role.SENDER,), ("acme",)),
    "acme-viewer": ((Role.VIEWER,), ("acme",)),
    "acme-operator": ((Role.OPERATOR,), ("acme",)),
}
SHA = "0" * 64
# method, path, JSON body, what it needs: a role, or "everywhere" (viewer of every namespace)
ENDPOINTS: list[tuple[str, str, Any, str]] = [
    ("POST", "/v1/notifications", notification(namespace="acme"), "sender"),
    ("GET", "/v1/notifications/1", None, "viewer"),
    ("GET", "/v1/audit", None, "viewer"),
    ("GET", "/v1/status", None, "viewer"),
    ("GET", "/v1/outbox", None, "viewer"),
    ("GET", "/v1/outbox/1", None, "viewer"),
    ("POST", "/v1/outbox/actions/hold", {"ids": [1]}, "operator"),
    ("GET", "/v1/events", None, "viewer"),
    ("POST", "/v1/events/ack", {"through": 0}, "operator"),
    ("GET", f"/v1/events/1/attachments/{SHA}", None, "viewer"),
    ("GET", "/v1/sync", None, "everywhere"),
    ("GET", "/metrics", None, "everywhere"),
]
GRANTS = {
    "sender": {"sender"},
    "viewer": {"viewer"},
    "auditor": {"viewer"},
    "operator": {"viewer", "operator"},
    "admin": {"sender", "viewer", "operator"},
}


@dataclass
class RoleApi:
    url: str
    store: SqlStore
    tokens: dict[str, str]

    def client(self, who: str | None) -> httpx.Client:
        headers = {} if who is None else {"Authorization": f"Bearer {self.tokens[who]}"}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30.0)

    def call(self, who: str | None, method: str, path: str, body: Any = None,
             **kw: Any) -> httpx.Response:
        with self.client(who) as client:
            return client.request(method, path, json=body, **kw)


StartRoles = Callable[..., RoleApi]


@pytest.fixture
def start_roles(store: SqlStore, store_url: str,
                monkeypatch: pytest.MonkeyPatch) -> Iterator[StartRoles]:
    """Serve the API with one generated token per entry of PRINCIPALS."""
    tokens = {name: secrets.token_hex(20) for name in PRINCIPALS}
    specs = []
    for name, (roles, namespaces) in PRINCIPALS.items():
        env = f"RECONCILE_TEST_ROLE_{name.upper().replace('-', '_')}"
        monkeypatch.setenv(env, tokens[name])
        specs.append(TokenSpec(f"env:{env}", roles, namespaces, name))
    running: list[Any] = []

    def start(**settings: Any) -> RoleApi:
        app = create_api(store, DaemonSettings(store_url=store_url, api_access=tuple(specs),
                                               worker_id=WORKER_ID, **settings),
                         DaemonMetrics(), live_config(store))
        serving = serve(app)
        running.append(serving)
        return RoleApi(serving.__enter__(), store, tokens)

    try:
        yield start
    finally:
        for serving in reversed(running):
            serving.__exit__(None, None, None)


@pytest.fixture
def roles(start_roles: StartRoles) -> RoleApi:
    return start_roles()


def _allowed(who: str, needs: str) -> bool:
    roles, namespaces = PRINCIPALS[who]
    granted = set().union(*(GRANTS[r.value] for r in roles))
    if needs == "everywhere":
        return "viewer" in granted and namespaces is None
    return needs in granted


@pytest.mark.parametrize(("method", "path", "body", "needs"), ENDPOINTS,
                         ids=[f"{m} {p}" for m, p, _, _ in ENDPOINTS])
def test_every_endpoint_checks_token_and_role(roles: RoleApi, method: str, path: str,
                                              body: Any, needs: str) -> None:
    assert roles.call(None, method, path, body).status_code == 401
    for who in PRINCIPALS:
        response = roles.call(who, method, path, body)
        if _allowed(who, needs):
            assert response.status_code not in (401, 403), (who, response.text)
        else:
            assert response.status_code == 403, (who, response.text)
            detail = response.json()["detail"]
            if needs == "everywhere" and _allowed(who, "viewer"):
                assert "not limited to namespaces" in detail
            else:
                assert detail == f"this needs the {needs if needs != 'everywhere' else 'viewer'}" \
                    " role", who


def _seed(roles: RoleApi) -> dict[str, int]:
    """A notification, audit rows, a ticket event and an incoming server per namespace."""
    ids = {}
    mails = {"default": "01-new-request-plain.eml", "acme": "10-alternative-text-html.eml"}
    for ns in ("default", "acme"):
        response = roles.call("admin", "POST", "/v1/notifications", notification(namespace=ns))
        assert response.status_code == 202, response.text
        ids[ns] = response.json()["id"]
        roles.store.audit.record([AuditEntry(AuditStatus.SENT, "sent", ns, f"{ns}-main",
                                             outbox_id=ids[ns], recipient="r@example.com")])
        raw = corpus(mails[ns])
        result = process(raw, pipeline_context(roles.store, "support"))
        IncomingStore.of_store(roles.store, SEAL_KEY).record_many(
            ns, "support", [JudgedMail(f"imap:INBOX:1:{ns}", result, raw, False)])
        assert roles.store.incoming.claim(ns, "support", "test", lease_seconds=60)
    return ids


def test_a_namespace_limited_viewer_never_sees_another_namespace(roles: RoleApi) -> None:
    ids = _seed(roles)
    call = roles.call
    assert call("acme-viewer", "GET", f"/v1/notifications/{ids['default']}").status_code == 404
    assert call("acme-viewer", "GET", f"/v1/notifications/{ids['acme']}").status_code == 200
    assert call("acme-viewer", "GET", f"/v1/outbox/{ids['default']}").status_code == 404
    # the same answer as for an id that never existed: nothing tells the two apart
    assert call("acme-viewer", "GET", f"/v1/outbox/{ids['default']}").json() == {
        "detail": f"there is no outbox message {ids['default']} (never accepted, or purged "
                  "after it was finished)"}
    outbox = call("acme-viewer", "GET", "/v1/outbox").json()
    assert [m["namespace"] for m in outbox["messages"]] == ["acme"]
    assert sum(outbox["counts"].values()) == 1
    audit = call("acme-viewer", "GET", "/v1/audit").json()
    assert audit and {row["namespace"] for row in audit} == {"acme"}
    assert call("acme-viewer", "GET", "/v1/audit", params={"namespace": "default"}).json() == []
    assert {row["namespace"] for row in call("viewer", "GET", "/v1/audit").json()} == {
        "default", "acme"}
    events = call("acme-viewer", "GET", "/v1/events", params={"after": 0}).json()["events"]
    assert events and {e["namespace"] for e in events} == {"acme"}
    assert call("acme-viewer", "GET", "/v1/events",
                params={"after": 0, "namespace": "default"}).json()["events"] == []
    default_event = next(e for e in call("viewer", "GET", "/v1/events",
                                         params={"after": 0}).json()["events"]
                         if e["namespace"] == "default")
    assert call("acme-viewer", "GET",
                f"/v1/events/{default_event['id']}/attachments/{SHA}").status_code == 404
    status = call("acme-viewer", "GET", "/v1/status").json()
    assert status["namespaces"] == ["acme"]
    assert {s["namespace"] for s in status["incoming"]} == {"acme"}
    assert sum(status["outbox"].values()) == 1
    assert sum(status["ticketEvents"].values()) == len(events)
    whole = call("viewer", "GET", "/v1/status").json()
    assert whole["namespaces"] == ["acme", "default"]
    assert sum(whole["outbox"].values()) == 2


def test_a_namespace_limited_sender_submits_to_its_namespaces_only(roles: RoleApi) -> None:
    refused = roles.call("acme-sender", "POST", "/v1/notifications",
                         notification(namespace="default"))
    assert refused.status_code == 403
    assert refused.json() == {"detail": "this token may not submit to namespace 'default'"}
    # the same for a namespace that does not exist: nothing learnt about the config
    assert roles.call("acme-sender", "POST", "/v1/notifications",
                      notification(namespace="nowhere")).json()["detail"] == \
        "this token may not submit to namespace 'nowhere'"
    assert roles.call("acme-sender", "POST", "/v1/notifications",
                      notification(namespace="acme")).status_code == 202
    assert [m.namespace for m in roles.store.outbox.search(QueueFilter())] == ["acme"]


def test_a_namespace_limited_operator_acts_on_its_namespaces_only(roles: RoleApi) -> None:
    ids = _seed(roles)
    held = roles.call("acme-operator", "POST", "/v1/outbox/actions/hold",
                      {"ids": [ids["default"], ids["acme"]], "reason": "check"})
    assert held.status_code == 200, held.text
    result = held.json()
    assert result["changed"] == [ids["acme"]]
    # another namespace's message is refused as one that does not exist
    assert [(r["id"], r["state"]) for r in result["refused"]] == [(ids["default"], None)]
    assert result["actor"] == "api token acme-operator"
    entries = roles.store.audit.search(outbox_id=ids["acme"], status=AuditStatus.SEND_HELD)
    assert "acme-operator" in (entries[0].reason + str(entries[0].details))
    assert roles.store.outbox.get(ids["default"]).state.value == "queued"
    named = roles.call("acme-operator", "POST", "/v1/outbox/actions/hold",
                       {"server": "default-main", "namespace": "default"})
    assert named.status_code == 404
    assert "default-main" not in named.text.replace("'default'", "")
    acked = roles.call("acme-operator", "POST", "/v1/events/ack", {"through": 10**6}).json()
    assert acked["acknowledged"] == 1
    assert roles.store.incoming.event_counts(("default",))["pending"] == 1


def test_metrics_can_be_opened_or_closed_by_the_setting(start_roles: StartRoles) -> None:
    opened = start_roles(metrics_require_token=False)
    assert opened.call(None, "GET", "/metrics").status_code == 200
    assert opened.call(None, "GET", "/healthz").status_code == 200


def test_no_token_value_is_logged(roles: RoleApi, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    _seed(roles)
    for who in PRINCIPALS:
        for method, path, body, _ in ENDPOINTS:
            roles.call(who, method, path, body)
            roles.call(None, method, path, body,
                       headers={"Authorization": f"Bearer {roles.tokens[who]}x"})
    assert "refused" in caplog.text and "lacks the operator role" in caplog.text
    for token in roles.tokens.values():
        assert token not in caplog.text
