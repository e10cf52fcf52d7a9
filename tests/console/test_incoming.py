"""Incoming screen (SPEC X6, I6, I7): fetch state per mailbox, error folder entries, and
"Retry" for operators through the same code as `reconcile incoming retry`."""

from __future__ import annotations

import socket

from state.kit import res

from console.conftest import Console
from console.console_kit import csrf_for
from console.test_history import apply
from reconciler.runtime.access import Principal
from reconciler.state import SqlStore
from reconciler.state.contract import ErrorDetails, MailRecord

VIEWER = Principal.of("viewer", ["viewer"])
OPERATOR = Principal.of("ops", ["operator"])
BETA_ONLY = Principal.of("beta-ops", ["operator"], ["beta"])


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mailboxes(store: SqlStore) -> None:
    spec = {"email": "support@acme.example", "protocol": "imaps", "host": "127.0.0.1",
            "port": closed_port()}
    apply(store, res("support", ns="acme", kind="IncomingServer", **spec))
    store.incoming.fetch_failed("acme", "support", "connect", "connection refused")
    store.incoming.record("acme", "support", [
        MailRecord("imap:INBOX:1:7", error=ErrorDetails("no-sender", None))])
    store.incoming.fetch_succeeded("beta", "desk", error_folder_count=0)


def test_shows_fetch_state_and_error_folder(console_store: SqlStore,
                                            console_as: Console) -> None:
    mailboxes(console_store)
    page = console_as(VIEWER).get("/console/incoming")
    assert page.status_code == 200
    assert "acme/support" in page.text and "connection refused" in page.text
    assert "no-sender" in page.text and "imap:INBOX:1:7" in page.text
    assert "beta/desk" in page.text
    assert "Retry" not in page.text  # viewers read only


def test_a_scoped_principal_sees_only_its_mailboxes(console_store: SqlStore,
                                                   console_as: Console) -> None:
    mailboxes(console_store)
    client = console_as(BETA_ONLY)
    page = client.get("/console/incoming")
    assert "beta/desk" in page.text and "acme" not in page.text
    refused = client.post("/console/incoming/acme/support/retry",
                          data={"csrf_token": csrf_for(client)})
    assert refused.status_code == 404


def test_retry_reports_the_mail_server_problem_without_a_traceback(
        console_store: SqlStore, console_as: Console) -> None:
    mailboxes(console_store)
    client = console_as(OPERATOR)
    assert "Retry" in client.get("/console/incoming").text
    csrf = csrf_for(client)
    tried = client.post("/console/incoming/acme/support/retry", data={"csrf_token": csrf})
    assert tried.status_code == 409
    assert "acme/support:" in tried.text and "Traceback" not in tried.text
    missing = client.post("/console/incoming/acme/nope/retry", data={"csrf_token": csrf})
    assert missing.status_code == 404
    viewer = console_as(VIEWER)
    assert viewer.post("/console/incoming/acme/support/retry",
                       data={"csrf_token": csrf_for(viewer)}).status_code == 403
