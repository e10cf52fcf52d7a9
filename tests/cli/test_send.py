"""`reconcile send`: durable intake from the command line (SPEC O1), on SQLite and PostgreSQL.

Like the API, it refuses up front what could only fail later: a namespace without an
outgoing server, attachments a refusing server would not take (issue 11 item 9)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from daemon.app_kit import commit, mail_settings, smtp_server

from reconciler.cli.main import cli
from reconciler.mail.envelope import Notification
from reconciler.state import open_store
from reconciler.state.base import OutboxState


def run(*args: str | Path, input: str | None = None) -> Result:
    return CliRunner().invoke(cli, ["send", *map(str, args)], input=input)


@pytest.fixture
def db(store_url: str) -> str:
    """A store whose live config has a primary server in `default` and in `acme`: `send`
    refuses namespaces nothing could send from. Nothing listens on the port: these tests
    only queue."""
    with open_store(store_url) as store:
        commit(store, smtp_server("desk", 2525, primary=True),
               smtp_server("acme-desk", 2525, namespace="acme", primary=True))
    return store_url


def queued(store_url: str) -> int:
    with open_store(store_url) as store:
        return sum(store.outbox.depth().values())


BASIC = ("--module", "request", "--to", "jane@corp.example", "--subject", "Ticket updated")


def test_prints_the_id_of_the_stored_notification(db: str, tmp_path: Path) -> None:
    html = tmp_path / "body.html"
    html.write_text("<p>Your ticket was <b>updated</b>.</p>")
    result = run("--store", db, "--namespace", "acme", "--module", "request",
                 "--to", "Jane Doe <jane@corp.example>", "--to", "bob@corp.example",
                 "--cc", "ops@corp.example", "--bcc", "audit@corp.example",
                 "--subject", "Ticket ##RE-12## updated", "--text", "Your ticket was updated.",
                 "--html-file", html, "--set", "department=HR", "--set", "site=Lab=2")
    assert result.exit_code == 0, result.output
    outbox_id = int(result.stdout)
    with open_store(db) as store:
        msg = store.outbox.get(outbox_id)
        stored = Notification.model_validate(store.outbox.notification(outbox_id))
    assert msg is not None and msg.state == OutboxState.QUEUED and msg.namespace == "acme"
    assert [str(m) for m in stored.to] == ["Jane Doe <jane@corp.example>", "bob@corp.example"]
    assert [m.email for m in (*stored.cc, *stored.bcc)] == ["ops@corp.example",
                                                            "audit@corp.example"]
    assert stored.context == {"department": "HR", "site": "Lab=2"}
    assert stored.html_body == "<p>Your ticket was <b>updated</b>.</p>"
    assert stored.subject == "Ticket ##RE-12## updated"


def test_same_idempotency_key_stores_nothing_new(db: str) -> None:
    first = run("--store", db, *BASIC, "--text", "one", "--idempotency-key", "ticket-12-v3")
    again = run("--store", db, *BASIC, "--text", "two", "--idempotency-key", "ticket-12-v3")
    other_ns = run("--store", db, *BASIC, "--text", "two", "--idempotency-key", "ticket-12-v3",
                   "--namespace", "acme")
    assert first.exit_code == again.exit_code == other_ns.exit_code == 0
    assert again.stdout.split() == [first.stdout.strip(), "duplicate"]
    assert int(other_ns.stdout) != int(first.stdout)  # keys are per namespace
    with open_store(db) as store:
        assert store.outbox.notification(int(first.stdout))["textBody"] == "one"


def test_body_and_attachments_from_files(db: str, tmp_path: Path) -> None:
    report = tmp_path / "report.pdf"
    report.write_bytes(b"%PDF-1.4 not really")
    notes = tmp_path / "notes.unknownext"
    notes.write_bytes(b"\x00\x01")
    result = run("--store", db, *BASIC, "--text-file", "-", "--attach", report,
                 "--attach", notes, input="Body from stdin.\n")
    assert result.exit_code == 0, result.output
    with open_store(db) as store:
        msg = store.outbox.get(int(result.stdout))
        stored = store.outbox.notification(int(result.stdout))
    assert msg is not None
    assert [(a.name, a.content_type, a.size) for a in msg.attachments] == [
        ("report.pdf", "application/pdf", 19), ("notes.unknownext",
                                               "application/octet-stream", 2)]
    assert stored["textBody"] == "Body from stdin.\n"
    assert stored["attachments"][0]["data"] == b"%PDF-1.4 not really"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--to", "not-an-address"), "to.0"),
        (("--to", "jane@corp.example", "--subject", "Bcc: evil@x.example\r\nX: y"),
         "subject contains a line break"),
        (("--to", "jane@corp.example", "--set", "department"), "write FIELD=VALUE"),
    ],
)
def test_invalid_input_is_refused_in_plain_words(db: str, args: tuple[str, ...],
                                                  message: str) -> None:
    base = {"--module": "request", "--subject": "s", "--text": "t"}
    flat = [x for k, v in base.items() if k not in args for x in (k, v)]
    result = run("--store", db, *flat, *args)
    assert result.exit_code == 1
    assert message in result.output
    with open_store(db) as store:
        assert sum(store.outbox.depth().values()) == 0


def test_exactly_one_text_body_option(db: str, tmp_path: Path) -> None:
    neither = run("--store", db, *BASIC)
    body = tmp_path / "b.txt"
    body.write_text("x")
    both = run("--store", db, *BASIC, "--text", "x", "--text-file", body)
    for result in (neither, both):
        assert result.exit_code == 1
        assert "exactly one of --text and --text-file" in result.output


def test_missing_store_is_an_error_not_a_new_store(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "state.db"
    result = run("--store", path, *BASIC, "--text", "x")
    assert result.exit_code == 1 and "no state store" in result.output
    assert not path.exists()


def test_ticket_is_stored_with_the_notification(db: str) -> None:
    result = run("--store", db, *BASIC, "--text", "x", "--ticket", "request/0123")
    assert result.exit_code == 0, result.output
    with open_store(db) as store:
        stored = Notification.model_validate(store.outbox.notification(int(result.stdout)))
    assert stored.ticket is not None
    # numbers as the incoming pipeline reads them from subjects: no leading zeros
    assert (stored.ticket.module, stored.ticket.id) == ("request", "123")


@pytest.mark.parametrize(("value", "says"), [
    ("123", "write MODULE/ID, e.g. --ticket request/123"),
    ("request/", "write MODULE/ID"),
    ("request/12 3", "ticket id must be 1-32 letters"),
    ("re quest/12", "ticket module must be a word"),
])
def test_a_malformed_ticket_is_a_clear_error(db: str, value: str, says: str) -> None:
    result = run("--store", db, *BASIC, "--text", "x", "--ticket", value)
    assert result.exit_code != 0
    assert says in result.output and "Traceback" not in result.output
    with open_store(db) as store:
        assert store.outbox.depth()[OutboxState.QUEUED] == 0


# -- refused up front (issue 11 item 9) -----------------------------------------------------


@pytest.fixture
def elsewhere(store_url: str) -> str:
    """Outgoing servers only in `acme` and `globex`; `hr` has settings but no server."""
    with open_store(store_url) as store:
        commit(store, smtp_server("acme-desk", 2525, namespace="acme", primary=True),
               smtp_server("globex-desk", 2525, namespace="globex", primary=True),
               mail_settings("hr"))
    return store_url


@pytest.mark.parametrize(("args", "says"), [
    ((), "no --namespace given: namespace 'default' has no outgoing server"),
    (("--namespace", "acme-typo"), "namespace 'acme-typo' has no outgoing server"),
    (("--namespace", "hr"), "namespace 'hr' has no outgoing server"),
])
def test_a_namespace_without_servers_is_refused_naming_the_configured_ones(
    elsewhere: str, args: tuple[str, ...], says: str
) -> None:
    result = run("--store", elsewhere, *BASIC, "--text", "x", *args)
    assert result.exit_code == 1, result.output
    assert says in result.output
    assert "Configured namespaces: acme, globex; give one with --namespace." in result.output
    assert "Traceback" not in result.output
    assert queued(elsewhere) == 0
    ok = run("--store", elsewhere, *BASIC, "--text", "x", "--namespace", "globex")
    assert ok.exit_code == 0, ok.output


def test_an_empty_live_store_says_to_apply_first(store_url: str) -> None:
    open_store(store_url).close()
    result = run("--store", store_url, *BASIC, "--text", "x")
    assert result.exit_code == 1
    assert "apply a config with an OutgoingServer first" in result.output
    assert queued(store_url) == 0


def _files(tmp_path: Path) -> tuple[Path, Path]:
    big = tmp_path / "scan.pdf"
    big.write_bytes(b"%" * (1024 * 1024 + 1))  # 1 byte over 1 MB on its own
    small = tmp_path / "note.txt"
    small.write_bytes(b"fits")
    return big, small


def test_attachments_a_refusing_server_would_not_take_are_refused(
    store_url: str, tmp_path: Path
) -> None:
    with open_store(store_url) as store:
        commit(store, smtp_server("desk", 2525, primary=True, attachmentLimitMB=1,
                                  attachments={"oversize": "refuse"}))
    big, small = _files(tmp_path)
    result = run("--store", store_url, *BASIC, "--text", "x", "--attach", small,
                 "--attach", big)
    assert result.exit_code == 1, result.output
    assert ("--attach scan.pdf: attachment 'scan.pdf': 1048577 bytes is above the limit of "
            "1 MB (1048576 bytes) of server desk, which refuses oversize attachments") \
        in result.output
    assert "note.txt" not in result.output and "Nothing was queued." in result.output
    assert queued(store_url) == 0


def test_attachments_the_server_will_leave_out_are_named_on_stderr(
    store_url: str, tmp_path: Path
) -> None:
    with open_store(store_url) as store:
        commit(store, smtp_server("desk", 2525, primary=True, attachmentLimitMB=1))
    big, small = _files(tmp_path)
    result = run("--store", store_url, *BASIC, "--text", "x", "--attach", big,
                 "--attach", small)
    assert result.exit_code == 0, result.output
    int(result.stdout)  # stdout stays just the id
    assert result.stderr == ("warning: --attach scan.pdf will be left out by server desk: "
                             "1048577 bytes is above the limit of 1 MB\n")
    assert queued(store_url) == 1
