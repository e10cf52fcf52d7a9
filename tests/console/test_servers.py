"""The Servers screen: cards from the store's health records, token rows, audit and
fetch state, limited to the principal's namespaces; "Test connection" for operators."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from peers.smtp import free_port

from reconciler.config.desired import CanonicalResource, ResourceKey
from reconciler.health import record as rec
from reconciler.runtime.access import Principal
from reconciler.state import Action, Change, RevisionMeta, SqlStore
from reconciler.state.base import AuditEntry, AuditStatus
from reconciler.state.contract import TokenWrite

from .console_kit import (
    TokenTable,
    client,
    console_app,
    csrf_of,
    outgoing,
    sign_in,
    signed_in,
)

NOW = datetime(2026, 5, 1, 10, 0, tzinfo=UTC)
MAIN_KEY = ResourceKey("OutgoingServer", "acme", "acme-relay")



def _apply(store: SqlStore, *changes: Change) -> None:
    store.commit(list(changes), RevisionMeta(actor="console-test"), base_revision=store.head())


def _incoming(namespace: str, name: str, port: int) -> Change:
    spec = {"email": f"{name}@desk.example", "protocol": "imaps", "host": "127.0.0.1",
            "port": port, "enabled": True}
    resource = CanonicalResource.build(ResourceKey("IncomingServer", namespace, name),
                                       "reconciler.dev/v1", spec, None)
    return Change(Action.CREATE, resource.key, None, resource)


def _seed(store: SqlStore) -> None:
    """acme: a relay whose main host is down and alternate up, with an OAuth grant and
    a sent mail; an incoming mailbox failing to fetch."""
    _apply(store, outgoing("acme", "acme-relay", host="smtp.acme.example",
                           alternateHost="backup.acme.example", alternatePort=587,
                           primary=False),
           _incoming("acme", "acme-inbox", free_port()))
    record = rec.HealthRecord(
        state=rec.REACHABLE, last_checked=NOW, last_change=NOW, active_host=rec.ALTERNATE,
        hosts={rec.MAIN: rec.HostHealth("smtp.acme.example:587", rec.UNREACHABLE,
                                        "tcp: connection refused", "tcp", "connect", True),
               rec.ALTERNATE: rec.HostHealth("backup.acme.example:587", rec.REACHABLE)},
        last_error="tcp: connection refused", failed_step="tcp",
        hint="Nothing accepts connections on smtp.acme.example:587")
    store.status_put(MAIN_KEY, rec.merged(store.status_get(MAIN_KEY), record))
    store.tokens.write(("OutgoingServer", "acme", "acme-relay"), TokenWrite(
        client_digest="d", grant="authorization_code", account="relay@acme.example",
        sealed="sealed-by-the-cache", refresh_present=True,
        access_expires_at=NOW + timedelta(hours=1)), expect_generation=None)
    store.audit.record([AuditEntry(AuditStatus.SENT, "250 ok", namespace="acme",
                                   server="acme-relay", recipient="a@example.com",
                                   created_at=NOW - timedelta(minutes=5))])
    store.incoming.fetch_failed("acme", "acme-inbox", "connect", "imaps: connection refused",
                                now=NOW)


def _card(html: str, name: str) -> str:
    found = re.search(rf'<article class="card" aria-labelledby="card-[a-z]+-[a-z]+-{name}">'
                      r"(.*?)</article>", html, re.S)
    assert found, f"no card for {name}"
    return found.group(1)


def test_cards_show_hosts_errors_grant_and_last_activity(store: SqlStore) -> None:
    _seed(store)
    tokens = TokenTable()
    browser = client(console_app(store, tokens))
    sign_in(browser, tokens.add(Principal.of("watcher", ["viewer"])))
    html = browser.get("/console/servers").text
    assert "Namespace acme" in html and "Namespace default" in html
    relay = _card(html, "acme-relay")
    assert "Reachable" in relay and "smtp.acme.example:587" in relay
    assert "backup.acme.example:587" in relay and "Unreachable" in relay
    assert "at step <strong>tcp</strong>: tcp: connection refused" in relay
    assert "authorization_code" in relay and "relay@acme.example" in relay
    assert "2026-05-01 11:00:00" in relay and "refresh token held" in relay
    assert "Last send" in relay and "2026-05-01 09:55:00" in relay
    assert "sealed-by-the-cache" not in html
    inbox = _card(html, "acme-inbox")
    assert "Last fetch" in inbox and "imaps: connection refused" in inbox
    assert "Unknown" in _card(html, "default-main")  # never checked yet
    assert "Test connection" not in html  # viewers do not test


def test_a_namespace_limited_user_sees_only_its_servers(store: SqlStore) -> None:
    _seed(store)
    tokens = TokenTable()
    browser = client(console_app(store, tokens))
    sign_in(browser, tokens.add(Principal.of("default desk", ["operator"], ["default"])))
    html = browser.get("/console/servers").text
    assert "default-main" in html
    assert "acme" not in html
    token = csrf_of(html)
    reply = browser.post("/console/servers/outgoing/acme/acme-relay/test",
                         data={"csrf_token": token})
    assert reply.status_code == 404


def test_an_operator_tests_a_connection_and_sees_the_failing_step(store: SqlStore) -> None:
    port = free_port()  # nothing listens: the TCP step fails for real
    _apply(store, outgoing("default", "local", host="127.0.0.1", port=port, primary=False,
                           security="none"))
    tokens = TokenTable()
    browser = client(console_app(store, tokens))
    sign_in(browser, tokens.add(Principal.of("ops", ["operator"])))
    token = csrf_of(browser.get("/console/servers").text)
    reply = browser.post("/console/servers/outgoing/default/local/test",
                         headers={"X-CSRF-Token": token, "HX-Request": "true"})
    assert reply.status_code == 200
    assert "<html" not in reply.text  # an htmx fragment for the card
    assert f"127.0.0.1:{port}</strong>: failed" in reply.text
    assert re.search(r'<li class="error">tcp: failed', reply.text)
    without_csrf = browser.post("/console/servers/outgoing/default/local/test")
    assert without_csrf.status_code == 403


def test_a_viewer_may_not_test_connections(store: SqlStore) -> None:
    tokens = TokenTable()
    browser = client(console_app(store, tokens))
    sign_in(browser, tokens.add(Principal.of("watcher", ["viewer"])))
    token = csrf_of(browser.get("/console/servers").text)
    reply = browser.post("/console/servers/outgoing/default/default-main/test",
                         data={"csrf_token": token})
    assert reply.status_code == 403 and "operator" in reply.text


def test_a_hand_edited_health_record_reads_as_unknown_with_a_note(store: SqlStore) -> None:
    store.status_put(ResourceKey("OutgoingServer", "default", "default-main"),
                     {"health": {"state": "Reachable", "lastChecked": "2026-05-01T10:00:00",
                                 "lastChange": "2026-05-01T10:00:00",
                                 "hosts": ["main", "alternate"]}})
    browser = signed_in(store, Principal.of("watcher", ["viewer"]))
    reply = browser.get("/console/servers")
    assert reply.status_code == 200
    card = _card(reply.text, "default-main")
    assert "Unknown" in card and "Reachable" not in card
    assert "the stored health record cannot be read" in card
    assert "next check" in card


def test_last_sends_of_many_servers_come_from_one_store_query(store: SqlStore) -> None:
    _apply(store, *(outgoing("acme", f"relay{i:02}", primary=False) for i in range(30)))
    store.audit.record([
        AuditEntry(status, "250 ok", namespace=ns, server=name,
                   created_at=NOW + timedelta(minutes=minutes))
        for ns, name, status, minutes in [
            ("acme", "relay03", AuditStatus.SENT, 1), ("acme", "relay03", AuditStatus.SENT, 7),
            ("acme", "relay03", AuditStatus.SEND_FAILED, 9),  # not a send
            ("default", "relay03", AuditStatus.SENT, 30),  # another namespace's relay03
            ("acme", "relay29", AuditStatus.SENT, 2)]])
    wanted = [("acme", f"relay{i:02}") for i in range(30)] + [("default", "default-main")]
    assert store.audit.last_sent(wanted) == {("acme", "relay03"): NOW + timedelta(minutes=7),
                                             ("acme", "relay29"): NOW + timedelta(minutes=2)}
    html = signed_in(store, Principal.of("watcher", ["viewer"])).get("/console/servers").text
    assert "2026-05-01 10:07:00" in _card(html, "relay03")
    assert re.search(r"Last send</dt>\s*<dd>never", _card(html, "relay04"))
