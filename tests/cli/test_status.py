"""`reconcile status` (O9, P7): server cards from the live specs plus the health the
monitor recorded, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from daemon.app_kit import commit, resource
from health.kit import key_of, monitor_for, put_servers
from peers.smtp import HOST, SmtpPeer, free_port, server_spec
from peers.smtp_sink import SmtpSink
from plan.kit import copy_examples

from reconciler.health import record as rec
from reconciler.incoming.store import IncomingStore
from reconciler.mail.failover import HostSelector
from reconciler.state import open_store

from .helpers_history import apply, run


@pytest.fixture
def peer() -> Iterator[SmtpPeer]:
    with SmtpPeer("plain") as started:
        yield started


def probe(store_url: str, selector: HostSelector | None = None) -> None:
    with open_store(store_url) as store:
        asyncio.run(monitor_for(store, store_url, selector=selector).probe_once())


def card(output: str, name: str) -> str:
    """The lines of one server's card."""
    blocks = output.split("\n\n")
    found = [b for b in blocks if b.startswith(f"default/{name}  ") or
             b.startswith(f"acme/{name}  ") or b.startswith(f"globex/{name}  ")]
    assert len(found) == 1, output
    return found[0]


def test_applied_examples_are_not_checked_yet(tmp_path: Path, store_url: str) -> None:
    apply(copy_examples(tmp_path), store_url)
    out = run("status", "--store", store_url).stdout
    assert out.startswith("5 outgoing servers: 4 not checked, 1 disabled\n")
    gmail = card(out, "gmail-notifications")
    assert gmail.splitlines()[0] == "acme/gmail-notifications  ? Not checked"
    assert "  smtp  smtp.gmail.com:587  starttls  enabled  primary" in gmail
    assert "  alternate smtp-relay.gmail.com:587" in gmail
    assert "not checked yet: the daemon's health monitor records this" in gmail
    assert "not checked yet: the daemon's health monitor records this" in card(out,
                                                                                "graph-desk")
    dev = card(out, "dev-relay")
    assert "○ Disabled" in dev and "disabled servers are not probed" in dev

    only = run("status", "--store", store_url, "--namespace", "globex").stdout
    assert only.startswith("2 outgoing servers:") and "acme/" not in only
    data = json.loads(run("status", "--store", store_url, "--format", "json").stdout)
    states = {s["name"]: s["state"] for s in data["servers"]}
    assert states["dev-relay"] == "Disabled" and states["o365-hr"] == "Not checked"
    hosts = {s["name"]: s["hosts"] for s in data["servers"]}
    assert [(h["role"], h["address"], h["state"]) for h in hosts["gmail-notifications"]] == [
        ("main", "smtp.gmail.com:587", "Not checked"),
        ("alternate", "smtp-relay.gmail.com:587", "Not checked")]
    assert all(s["health"] is None for s in data["servers"])


def test_cards_show_health_errors_and_the_active_host(
    store_url: str, peer: SmtpPeer, smtp_sink: SmtpSink
) -> None:
    closed = free_port()
    good = peer.server("good")
    bad = server_spec(closed, "plain", "bad", primary=False)
    moved = server_spec(smtp_sink.port, "plain", "moved", primary=False, alternateHost=HOST,
                        alternatePort=peer.port)
    with open_store(store_url) as store:
        put_servers(store, good, bad, moved)
    smtp_sink.stop()
    probe(store_url)

    out = run("status", "--store", store_url).stdout
    assert out.startswith("3 outgoing servers: 2 Reachable, 1 Unreachable; 1 Reachable "
                          "server with a host Unreachable\n")
    ok = card(out, "good")
    assert ok.splitlines()[0] == "default/good  ● Reachable"
    assert f"  smtp  {HOST}:{peer.port}  none  enabled  primary" in ok
    assert "last error" not in ok
    assert "  last checked " in ok and " ago) by daemon-1" in ok
    down = card(out, "bad")
    assert down.splitlines()[0] == "default/bad  ✗ Unreachable"
    assert f"  last error: tcp: connection refused by {HOST}:{closed}" in down
    assert "  likely fix: Nothing accepts connections on" in down
    via = card(out, "moved")
    assert "● Reachable" in via
    assert (f"  active host: alternate {HOST}:{peer.port} (main host unreachable: "
            f"tcp: connection refused by {HOST}:{smtp_sink.port})") in via

    data = json.loads(run("status", "--store", store_url, "--format", "json").stdout)
    by_name = {s["name"]: s for s in data["servers"]}
    assert by_name["bad"]["state"] == "Unreachable"
    assert by_name["bad"]["health"]["lastError"].startswith("tcp: connection refused")
    assert by_name["moved"]["health"]["activeHost"] == "alternate"
    assert by_name["good"]["health"]["hosts"]["main"]["address"] == f"{HOST}:{peer.port}"


def test_each_host_shows_its_own_state_and_last_error(store_url: str, peer: SmtpPeer) -> None:
    """A dead alternate behind a live main host (and the reverse) used to read as plain
    Reachable: the server's state is that of the host sends go to first."""
    dead = free_port()
    backup_dead = server_spec(peer.port, "plain", "backup-dead", alternateHost=HOST,
                              alternatePort=dead)
    main_dead = server_spec(dead, "plain", "main-dead", primary=False, alternateHost=HOST,
                            alternatePort=peer.port)
    with open_store(store_url) as store:
        put_servers(store, backup_dead, main_dead)
    probe(store_url)

    out = run("status", "--store", store_url).stdout
    assert out.startswith("2 outgoing servers: 2 Reachable; 2 Reachable servers with a "
                          "host Unreachable\n"), out
    refused = f"last error: tcp: connection refused by {HOST}:{dead}"
    lines = card(out, "backup-dead").splitlines()
    assert lines[0] == "default/backup-dead  ● Reachable (alternate host Unreachable)"
    assert f"  main host {HOST}:{peer.port}  ● Reachable (active)" in lines
    assert f"  alternate host {HOST}:{dead}  ✗ Unreachable  {refused}" in lines
    lines = card(out, "main-dead").splitlines()
    assert lines[0] == "default/main-dead  ● Reachable (main host Unreachable)"
    assert f"  main host {HOST}:{dead}  ✗ Unreachable  {refused}" in lines
    assert f"  alternate host {HOST}:{peer.port}  ● Reachable (active)" in lines

    data = json.loads(run("status", "--store", store_url, "--format", "json").stdout)
    hosts = {s["name"]: s["hosts"] for s in data["servers"]}
    assert hosts["backup-dead"] == [
        {"role": "main", "address": f"{HOST}:{peer.port}", "state": "Reachable",
         "lastError": None, "failedStep": None, "active": True},
        {"role": "alternate", "address": f"{HOST}:{dead}", "state": "Unreachable",
         "lastError": f"tcp: connection refused by {HOST}:{dead}", "failedStep": "tcp",
         "active": False}]
    assert [(h["role"], h["state"], h["active"]) for h in hosts["main-dead"]] == [
        ("main", "Unreachable", False), ("alternate", "Reachable", True)]


def test_a_changed_host_is_flagged_until_checked_again(store_url: str, peer: SmtpPeer) -> None:
    server = peer.server("relay")
    with open_store(store_url) as store:
        put_servers(store, server)
    probe(store_url)
    elsewhere = server_spec(free_port(), "plain", "relay")
    with open_store(store_url) as store:
        put_servers(store, elsewhere)
        assert rec.read(store.status_get(key_of(server))) is not None  # status kept
    out = run("status", "--store", store_url).stdout
    assert (f"  note: checked at {HOST}:{peer.port}; the spec now says "
            f"{HOST}:{elsewhere.spec.port}, not checked yet") in out
    data = json.loads(run("status", "--store", store_url, "--format", "json").stdout)
    assert data["servers"][0]["stale"] is True


def test_no_servers_and_no_store(tmp_path: Path, store_url: str) -> None:
    with open_store(store_url):
        pass
    assert run("status", "--store", store_url).stdout.strip() == \
        "no outgoing servers in the live store"
    missing = run("status", "--store", str(tmp_path / "nowhere.db"), code=1)
    assert "no state store at" in missing.output


# -- incoming servers ---------------------------------------------------------------------


def _incoming(name: str, **spec: Any) -> Any:
    body = {"email": f"{name}@acme.example", "protocol": "imaps", "host": "imap.acme.example",
            "errorFolder": {"enabled": True, "name": "desk-errors", "stopFetchingAfter": 3}}
    body.update(spec)
    return resource("IncomingServer", name, body)


def test_incoming_cards_show_fetch_state_failures_and_the_error_folder(
        store_url: str) -> None:
    with open_store(store_url) as store:
        commit(store, _incoming("fine"), _incoming("broken", port=1993),
               _incoming("full"), _incoming("new"), _incoming("off", enabled=False),
               _incoming("cloud", protocol="graph", host=None))
        incoming = IncomingStore.of_store(store)
        then = datetime.now(UTC) - timedelta(minutes=10)
        incoming.claim("default", "fine", "daemon-7", lease_seconds=60)
        incoming.fetch_succeeded("default", "fine", error_folder_count=1, now=then)
        incoming.fetch_succeeded("default", "broken", error_folder_count=0, now=then)
        for _ in range(3):
            incoming.fetch_failed("default", "broken", "login",
                                  "the server refused the login for desk-reader")
        incoming.fetch_succeeded("default", "full", error_folder_count=3)
        incoming.set_paused("default", "full", "the error folder desk-errors holds 3 mails "
                            "(stopFetchingAfter 3)", error_folder_count=3)

    out = run("status", "--store", store_url).stdout
    assert out.startswith("no outgoing servers in the live store\n\n"
                          "6 incoming servers: 1 fetching, 1 failing, 1 stopped, "
                          "2 not fetched yet, 1 disabled\n"), out

    fine = card(out, "fine")
    assert fine.splitlines()[:2] == [
        "default/fine  ● Fetching",
        "  imaps  imap.acme.example  mailbox fine@acme.example  enabled"]
    assert "  last fetch " in fine and "(10 min ago) by daemon-7" in fine
    assert "  error folder desk-errors: 1 mail(s)" in fine

    broken = card(out, "broken")
    assert broken.splitlines()[0] == "default/broken  ✗ Failing (3 failed sessions in a row)"
    assert "  imaps  imap.acme.example:1993" in broken
    assert "  last error (login): the server refused the login for desk-reader" in broken
    assert "  last good fetch " in broken

    full = card(out, "full")
    assert full.splitlines()[0] == "default/full  ■ Stopped"
    assert "  stopped: the error folder desk-errors holds 3 mails" in full
    assert "reconcile incoming retry full --namespace default" in full
    assert "  error folder desk-errors: 3 mail(s)" in full

    assert "not fetched yet: the daemon's incoming runner records this" in card(out, "new")
    assert "  graph  Microsoft Graph  mailbox cloud@acme.example" in card(out, "cloud")
    assert card(out, "off").splitlines()[0] == "default/off  ○ Disabled"

    data = json.loads(run("status", "--store", store_url, "--format", "json").stdout)
    by_name = {c["name"]: c for c in data["incoming"]}
    assert data["servers"] == []
    assert by_name["broken"]["state"] == "Failing"
    assert by_name["broken"]["fetch"]["consecutiveFailures"] == 3
    assert by_name["full"]["fetch"]["errorFolderCount"] == 3
    assert by_name["new"]["fetch"] is None and by_name["off"]["enabled"] is False
