"""`reconcile incoming status|retry|errors` and `reconcile audit --direction incoming`."""

from __future__ import annotations

import email
import json
import stat
from pathlib import Path
from typing import Any

from click.testing import CliRunner
from daemon.app_kit import commit, resource
from incoming.incoming_kit import NS, SEAL_KEY, corpus, record_mail

from reconciler.cli.main import cli
from reconciler.incoming.store import IncomingStore
from reconciler.state import SqlStore


def reconcile(store_url: str, *args: str, env: dict[str, str] | None = None) -> Any:
    return CliRunner().invoke(cli, [*args, "--store", store_url], env=env or {})


def configure(store: SqlStore, **spec: Any) -> None:
    body = {"email": "support@acme.example", "protocol": "imaps", "host": "imap.acme.example"}
    body.update(spec)
    commit(store, resource("IncomingServer", "support", body),
           resource("IncomingServer", "pop", {**body, "protocol": "pop3",
                                              "email": "pop@acme.example"}))


def test_status_shows_failures_last_error_and_the_error_folder(store: SqlStore,
                                                              store_url: str) -> None:
    configure(store)
    incoming = IncomingStore.of_store(store)
    for _ in range(3):
        incoming.fetch_failed(NS, "support", "auth", "imap.acme.example:993 refused the login")
    incoming.set_paused(NS, "pop", None, error_folder_count=0)
    record_mail(store, corpus("01-new-request-plain.eml"), "imap:INBOX:1:1")
    result = reconcile(store_url, "incoming", "status")
    assert result.exit_code == 0, result.output
    assert "default/support (imaps, support@acme.example): failing (3 in a row)" in result.output
    assert "last error: imap.acme.example:993 refused the login" in result.output
    assert "error folder: 0 mail(s)" in result.output
    assert "ticket events: 1 waiting for the desk" in result.output
    as_json = json.loads(reconcile(store_url, "incoming", "status", "--format", "json").output)
    assert {r["server"] for r in as_json["servers"]} == {"support", "pop"}
    assert as_json["events"] == {"pending": 1, "delivered": 0, "rejected": 0}


def test_retry_names_a_missing_server_and_pop3_without_a_traceback(store: SqlStore,
                                                                   store_url: str) -> None:
    configure(store)
    missing = reconcile(store_url, "incoming", "retry", "nope")
    assert missing.exit_code == 1
    assert "no incoming server default/nope" in missing.output
    assert "Traceback" not in missing.output


def test_errors_needs_the_key_and_shows_the_sealed_details(store: SqlStore,
                                                           store_url: str) -> None:
    raw = b"X-Account: PLANTED-31\r\n" + corpus("49-no-from.eml")
    record_mail(store, raw, "imap:INBOX:1:1", to_error_folder=True)
    without = reconcile(store_url, "incoming", "errors", "support")
    assert without.exit_code == 1 and "stored encrypted" in without.output
    shown = reconcile(store_url, "incoming", "errors", "support",
                      env={"RECONCILE_TOKEN_KEY": SEAL_KEY.decode()})
    assert shown.exit_code == 0, shown.output
    assert "no-sender" in shown.output and "| X-Account: PLANTED-31" in shown.output


def test_errors_export_writes_the_mail_and_why_and_never_overwrites(
        store: SqlStore, store_url: str, tmp_path: Path) -> None:
    raw = b"X-Account: PLANTED-31\r\n" + corpus("49-no-from.eml")
    record_mail(store, raw, "imap:INBOX:1:1", to_error_folder=True)
    [entry] = IncomingStore.of_store(store, SEAL_KEY).errors(NS, "support")
    out, key = tmp_path / "error.eml", {"RECONCILE_TOKEN_KEY": SEAL_KEY.decode()}
    args = ("incoming", "errors", "export", str(entry.id), "--out", str(out))
    assert "stored encrypted" in reconcile(store_url, *args).output  # no key, no file
    assert not out.exists()

    written = reconcile(store_url, *args, env=key)
    assert written.exit_code == 0, written.output
    assert f"wrote #{entry.id} of default/support (no-sender)" in written.output
    data = out.read_bytes()
    assert data.endswith(raw) and stat.S_IMODE(out.stat().st_mode) == 0o600
    exported = email.message_from_bytes(data)
    assert exported["X-Reconciler-Error-Code"] == "no-sender"
    assert exported["X-Reconciler-Error-Server"] == "default/support"
    assert exported["X-Reconciler-Error-Marker"] == "imap:INBOX:1:1"
    assert "From" in str(exported["X-Reconciler-Error-Reason"])

    out.write_bytes(b"keep me")
    again = reconcile(store_url, *args, env=key)
    assert again.exit_code == 1 and "pass --force" in again.output
    assert out.read_bytes() == b"keep me"
    assert reconcile(store_url, *args, "--force", env=key).exit_code == 0
    assert out.read_bytes() == data
    missing = reconcile(store_url, "incoming", "errors", "export", "999", "--out",
                        str(tmp_path / "x.eml"), env=key)
    assert missing.exit_code == 1 and "no error-folder entry #999" in missing.output
    assert "Traceback" not in missing.output + again.output


def test_audit_filters_incoming_entries_like_outgoing_ones(store: SqlStore,
                                                          store_url: str) -> None:
    record_mail(store, corpus("01-new-request-plain.eml"), "imap:INBOX:1:1")
    record_mail(store, corpus("04-outlook-auto-reply.eml"), "imap:INBOX:1:2", name="help")

    def rows(*args: str) -> list[dict[str, Any]]:
        result = reconcile(store_url, "audit", "--format", "json", *args)
        assert result.exit_code == 0, result.output
        return json.loads(result.output)

    everything = rows("--direction", "incoming")
    assert len(everything) == 4 and {e["direction"] for e in everything} == {"incoming"}
    assert rows("--direction", "outgoing") == []
    processed = rows("--direction", "incoming", "--status", "PROCESSED")
    assert [e["recipient"] for e in processed] == ["jane@acme.example"]
    ignored = rows("--status", "RECEIVED_IGNORED", "--server", "help")
    assert [e["details"]["code"] for e in ignored] == ["auto-reply"]
    assert len(rows("--recipient", "JANE@acme.example")) == 2  # the sender, any case
    assert len(rows("--server", "support", "--since", "1h")) == 2
    assert rows("--server", "support", "--until", "2000-01-01T00:00:00") == []
