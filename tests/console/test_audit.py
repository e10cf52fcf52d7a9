"""Email audit screen (SPEC X6): filters, keyset pages, CSV export, namespace scope."""

from __future__ import annotations

import csv
import io
import re
from datetime import UTC, datetime, timedelta

from console.conftest import Console
from reconciler.runtime.access import Principal
from reconciler.state import SqlStore
from reconciler.state.base import AuditEntry, AuditStatus

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
VIEWER = Principal.of("viewer", ["viewer"])
ACME_ONLY = Principal.of("acme-reader", ["viewer"], ["acme"])


def seed(store: SqlStore, n: int = 120) -> None:
    store.audit.record([
        AuditEntry(AuditStatus.SENT if i % 2 else AuditStatus.SEND_FAILED, f"reason-{i:03d}",
                   namespace="acme" if i % 3 else "beta", server=f"smtp{i % 2}",
                   recipient=f"User{i % 5}@Example.com", created_at=T0 + timedelta(minutes=i))
        for i in range(n)])


def reasons(html: str) -> list[str]:
    return re.findall(r"reason-\d{3}", html)


def test_pages_walk_newest_first_and_keep_the_filter(console_store: SqlStore,
                                                     console_as: Console) -> None:
    seed(console_store)
    client = console_as(VIEWER)
    first = client.get("/console/audit", params={"status": "SENT"})
    assert first.status_code == 200
    got = reasons(first.text)
    assert got[:2] == ["reason-119", "reason-117"]
    assert len(got) == 50
    assert 'rel="next"' in first.text and "status=SENT" in first.text
    start = first.text.index('rel="next" href="') + len('rel="next" href="')
    link = first.text[start:first.text.index('"', start)].replace("&amp;", "&")
    second = client.get(link)
    assert reasons(second.text)[0] == "reason-019"
    assert 'rel="next"' not in second.text  # 60 SENT rows: two pages


def test_filters_by_recipient_server_direction_and_time(console_store: SqlStore,
                                                        console_as: Console) -> None:
    seed(console_store, 20)
    client = console_as(VIEWER)
    page = client.get("/console/audit", params={
        "recipient": "user1@example.COM", "server": "smtp1", "direction": "outgoing",
        "since": (T0 + timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M"),
        "until": (T0 + timedelta(minutes=16)).strftime("%Y-%m-%dT%H:%M")})
    assert reasons(page.text) == ["reason-011"]
    assert reasons(client.get("/console/audit", params={"direction": "incoming"}).text) == []


def test_bad_filter_values_are_named_on_the_page(console_as: Console) -> None:
    client = console_as(VIEWER)
    bad_time = client.get("/console/audit", params={"since": "yesterday"})
    assert bad_time.status_code == 400
    assert "from: &#39;yesterday&#39; is not a time" in bad_time.text
    assert "Traceback" not in bad_time.text
    bad_status = client.get("/console/audit.csv", params={"status": "LOST"})
    assert bad_status.status_code == 400 and "is not an audit status" in bad_status.text


def test_a_namespace_scoped_reader_sees_only_its_namespace(console_store: SqlStore,
                                                           console_as: Console) -> None:
    seed(console_store, 30)
    client = console_as(ACME_ONLY)
    page = client.get("/console/audit")
    assert "beta" not in page.text
    assert len(reasons(page.text)) == 20
    asked_for_beta = client.get("/console/audit", params={"namespace": "beta"})
    assert reasons(asked_for_beta.text) == []
    exported = client.get("/console/audit.csv", params={"namespace": "beta"})
    assert list(csv.reader(io.StringIO(exported.text)))[1:] == []


def test_csv_export_streams_every_matching_row_formula_safe(console_store: SqlStore,
                                                            console_as: Console) -> None:
    seed(console_store, 1234)
    console_store.audit.record([
        AuditEntry(AuditStatus.SEND_FAILED, "=HYPERLINK(\"http://evil\")", namespace="acme",
                   recipient="+1@example.com", server="@smtp")])
    exported = console_as(VIEWER).get("/console/audit.csv", params={"namespace": "acme"})
    assert exported.status_code == 200
    assert exported.headers["content-type"].startswith("text/csv")
    assert "attachment" in exported.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert len(rows) == 1 + sum(1 for i in range(1234) if i % 3)
    evil = rows[0]
    assert evil["reason"] == "'=HYPERLINK(\"http://evil\")"
    assert evil["recipient"] == "'+1@example.com" and evil["server"] == "'@smtp"
    assert rows[-1]["reason"] == "reason-001"


def test_a_sender_token_is_refused(console_as: Console) -> None:
    response = console_as(Principal.of("app", ["sender"])).get("/console/audit")
    assert response.status_code == 403
    assert "viewer" in response.text
