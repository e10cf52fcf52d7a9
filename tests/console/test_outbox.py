"""The Outbox screen: counts, deferred and held messages with their last error, pages,
and the operator's retry / hold / release / cancel, audited with the signed-in name."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from fastapi.testclient import TestClient

from reconciler.console.outbox import PAGE_SIZE
from reconciler.runtime.access import Principal
from reconciler.state import SqlStore
from reconciler.state.base import AuditStatus, OutboxState

from .console_kit import TokenTable, client, console_app, csrf_of, sign_in

OPS = Principal.of("ops@desk.example", ["operator"])



def _deferred(store: SqlStore, namespace: str, subject: str, error: str) -> int:
    note = {"module": "requests", "to": ["someone@example.com"], "subject": subject,
            "textBody": "hello"}
    stored = store.outbox.enqueue(note, namespace=namespace, idempotency_key=None)
    [claimed] = [m for m in store.outbox.claim("console-test", 1000, 60)
                 if m.id == stored.id]
    assert store.outbox.schedule_retry(claimed.id, "console-test",
                                       datetime.now(UTC) + timedelta(hours=1), error)
    return stored.id


def _signed_in(store: SqlStore, principal: Principal = OPS) -> TestClient:
    tokens = TokenTable()
    browser = client(console_app(store, tokens))
    sign_in(browser, tokens.add(principal))
    return browser


def test_deferred_messages_show_their_last_error_and_counts(store: SqlStore) -> None:
    first = _deferred(store, "default", "Printer broken", "451 4.3.0 try later")
    _deferred(store, "acme", "Acme request", "421 busy")
    html = _signed_in(store).get("/console/outbox").text
    assert f'href="/console/outbox/{first}"' in html
    assert "Printer broken" in html and "451 4.3.0 try later" in html
    assert "Acme request" in html
    assert re.search(r"<th scope=\"col\">retry_wait</th>", html)


def test_a_namespace_limited_user_sees_and_touches_only_its_messages(store: SqlStore) -> None:
    _deferred(store, "default", "Printer broken", "451 later")
    theirs = _deferred(store, "acme", "Acme request", "421 busy")
    browser = _signed_in(store, Principal.of("default ops", ["operator"], ["default"]))
    html = browser.get("/console/outbox").text
    assert "Printer broken" in html and "Acme request" not in html
    assert browser.get("/console/outbox?namespace=acme").text.count("Acme request") == 0
    assert browser.get(f"/console/outbox/{theirs}").status_code == 404
    token = csrf_of(html)
    reply = browser.post(f"/console/outbox/{theirs}/hold", data={"csrf_token": token})
    assert reply.status_code == 404
    message = store.outbox.get(theirs)
    assert message is not None and message.state is OutboxState.RETRY_WAIT


def test_operator_actions_change_the_outbox_and_audit_the_actor(store: SqlStore) -> None:
    id = _deferred(store, "default", "Printer broken", "451 later")
    browser = _signed_in(store)
    token = csrf_of(browser.get("/console/outbox").text)

    def do(action: str, **fields: str) -> int:
        reply = browser.post(f"/console/outbox/{id}/{action}",
                             data={"csrf_token": token, **fields})
        return reply.status_code

    def state() -> OutboxState:
        message = store.outbox.get(id)
        assert message is not None
        return message.state

    assert do("hold") == 200 and state() is OutboxState.HELD
    assert "Printer broken" in browser.get("/console/outbox?show=held").text
    assert do("release") == 200 and state() is OutboxState.RETRY_WAIT
    assert do("retry") == 200
    message = store.outbox.get(id)
    assert message is not None and message.next_attempt_at <= datetime.now(UTC)
    assert do("cancel") == 409 and state() is OutboxState.RETRY_WAIT  # a reason is needed
    assert do("cancel", reason="duplicate ticket") == 200 and state() is OutboxState.CANCELLED
    assert do("hold") == 409  # already cancelled: said so, nothing changed
    audit = store.audit.search(outbox_id=id, limit=None)
    actions = {a.status: a for a in audit}
    for status in (AuditStatus.SEND_HELD, AuditStatus.SEND_RELEASED,
                   AuditStatus.SEND_RETRY_NOW, AuditStatus.SEND_CANCELLED):
        assert status in actions
        assert "ops@desk.example" in f"{actions[status].reason} {actions[status].details}"
    detail = browser.get(f"/console/outbox/{id}").text
    assert "SEND_CANCELLED" in detail and "duplicate ticket" in detail


def test_every_outbox_action_refuses_a_post_without_the_csrf_token(store: SqlStore) -> None:
    id = _deferred(store, "default", "Printer broken", "451 later")
    browser = _signed_in(store)
    for action in ("retry", "hold", "release", "cancel"):
        reply = browser.post(f"/console/outbox/{id}/{action}", data={"reason": "x"})
        assert reply.status_code == 403, action
    message = store.outbox.get(id)
    assert message is not None and message.state is OutboxState.RETRY_WAIT


def test_long_queues_come_a_page_at_a_time(store: SqlStore) -> None:
    ids = [_deferred(store, "default", f"Subject {i:03}", "451 later")
           for i in range(PAGE_SIZE + 3)]
    browser = _signed_in(store)
    first = browser.get("/console/outbox?namespace=default").text
    assert f"Subject {0:03}" in first and f"Subject {PAGE_SIZE:03}" not in first
    link = re.search(r'href="(/console/outbox\?[^"]*after=(\d+))">Next page', first)
    assert link is not None and int(link.group(2)) == ids[PAGE_SIZE - 1]
    second = browser.get(link.group(1).replace("&amp;", "&")).text
    assert f"Subject {PAGE_SIZE + 2:03}" in second and "Subject 000" not in second
    assert "Next page" not in second and "First page" in second


def test_a_user_of_several_namespaces_sees_them_together_page_by_page(
        store: SqlStore) -> None:
    # interleaved, so a page that took one namespace at a time would be out of order
    total = PAGE_SIZE * 3 // 2 + 6  # two thirds of them are theirs: more than a page
    for i in range(total):
        _deferred(store, ("default", "acme", "globex")[i % 3], f"Subject {i:03}", "451")
    browser = _signed_in(store, Principal.of("two desks", ["viewer"], ["default", "acme"]))
    first = browser.get("/console/outbox").text
    mine = [i for i in range(total) if i % 3 != 2]
    assert re.findall(r"Subject (\d{3})", first) == [f"{i:03}" for i in mine[:PAGE_SIZE]]
    link = re.search(r'href="(/console/outbox\?[^"]*after=\d+)">Next page', first)
    assert link is not None
    second = browser.get(link.group(1).replace("&amp;", "&")).text
    assert re.findall(r"Subject (\d{3})", second) == [f"{i:03}" for i in mine[PAGE_SIZE:]]
    counts = re.search(r"<th scope=\"col\">retry_wait</th>.*?</tr>\s*<tr>(.*?)</tr>", first,
                       re.S)
    assert counts is not None and f"<td>{len(mine)}</td>" in counts.group(1)
    only_acme = browser.get("/console/outbox?namespace=acme").text
    assert set(re.findall(r"<td>(default|acme|globex)</td>", only_acme)) == {"acme"}
    other = browser.get("/console/outbox?namespace=globex").text  # not theirs: all of mine
    assert "globex</td>" not in other


def test_the_overview_counts_every_namespace_of_a_limited_user(store: SqlStore) -> None:
    for ns in ("default", "acme", "default"):
        _deferred(store, ns, f"{ns} request", "451 later")
    _deferred(store, "globex", "globex request", "451 later")
    html = _signed_in(store, Principal.of("two desks", ["viewer"], ["default", "acme"])) \
        .get("/console/").text
    assert "Outbox</a> (acme, default)" in html and "retry_wait 3" in html
