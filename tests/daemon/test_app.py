"""The whole daemon on real stores (SQLite and PostgreSQL) and real SMTP peers: config
applied with `reconcile apply`, hot reload, graceful SIGTERM, a kill -9 in the middle
of 1,000 messages, and two daemons sharing one PostgreSQL store (SPEC O1, O12, X3, X4).

The daemon runs in-process where that is enough, and as `reconcile daemon` where
signals and crashes are the point. Nothing here depends on the HTTP API or the
health monitor being installed.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from peers.smtp import PeerCerts, SmtpPeer, free_port
from peers.smtp_sink import SmtpSink

from reconciler.cli.main import cli
from reconciler.daemon.app import Daemon, DaemonError
from reconciler.state import open_store
from reconciler.state.base import AuditStatus, EnqueueRequest, OutboxState

from .app_kit import (
    WAIT_S,
    CountingSink,
    audit_of,
    daemon_process,
    enqueue,
    note,
    reconcile,
    run,
    sent,
    server_yaml,
    settings,
    until,
    wait_for,
    write_config,
)

PASSWORD_ENV = "DAEMON_TEST_SMTP_PASSWORD"
PASSWORD = "daemon-test-Secret-4711"
USER = "desk-sender"
CRASH_MESSAGES = 1000


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> PeerCerts:
    return PeerCerts.create(tmp_path_factory.mktemp("ca"))


@pytest.fixture
def peers(certs: PeerCerts) -> Iterator[list[SmtpPeer]]:
    started: list[SmtpPeer] = []
    yield started
    for peer in started:
        peer.stop()


def start_peer(peers: list[SmtpPeer], mode: str = "plain", **kw: object) -> SmtpPeer:
    peer = SmtpPeer(mode, **kw).start()  # type: ignore[arg-type]
    peers.append(peer)
    return peer


def apply(config: Path, store_url: str) -> None:
    result = CliRunner().invoke(cli, ["apply", str(config), "--store", store_url, "--yes"])
    assert result.exit_code == 0, result.output


def send(store_url: str, *args: str) -> int:
    result = CliRunner().invoke(cli, ["send", "--store", store_url, "--module", "request",
                                      "--text", "hello", *args])
    assert result.exit_code == 0, result.output
    return int(result.output.split()[0])


# -- in-process -----------------------------------------------------------------------------


def test_applied_config_is_sent_with_starttls_and_auth(
    store_url: str, tmp_path: Path, certs: PeerCerts, peers: list[SmtpPeer],
    monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
    peer = start_peer(peers, "starttls", certs=certs, user=USER, password=PASSWORD)
    auth = (f"  auth:\n    type: basic\n    username: {USER}\n"
            f"    password: {{secretRef: env:{PASSWORD_ENV}}}\n")
    apply(write_config(tmp_path / "config", server_yaml("desk", peer.port, security="starttls",
                                                         extra=auth)), store_url)
    daemon = Daemon(settings(store_url=store_url, ca_file=str(certs.ca_file),
                             listen_port=free_port()), api=False, health=False)

    async def main() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(daemon.run(stop))
        await asyncio.wait_for(daemon.ready.wait(), WAIT_S)
        outbox_id = await asyncio.to_thread(send, store_url, "--to", "Jane <jane@corp.example>",
                                            "--subject", "Ticket ##RE-9## updated")
        assert daemon.store is not None
        await sent(daemon.store, outbox_id)  # type: ignore[arg-type]
        metrics = daemon.metrics.registry
        assert metrics.get_sample_value("reconcile_config_revision") == 1
        # Counted once the worker has the commit's answer, a moment after the row shows.
        await until(lambda: metrics.get_sample_value(
            "reconcile_sends_total",
            {"namespace": "default", "server": "desk", "outcome": "sent"}) == 1,
            "the sends counter")
        await until(lambda: metrics.get_sample_value("reconcile_outbox_messages",
                                                     {"state": "queued"}) == 0,
                    "the queue depth gauge")
        stop.set()
        await task

    run(main)
    with open_store(store_url) as store:
        [row] = audit_of(store, 1)
    [got] = peer.messages
    assert got.tls and got.login == USER
    assert (row.status, row.server, row.recipient) == (AuditStatus.SENT, "desk",
                                                        "jane@corp.example")
    assert row.message_id == str(got.message["Message-ID"])


def test_every_installed_part_runs_and_stops_with_the_daemon(
    tmp_path: Path, peers: list[SmtpPeer]
) -> None:
    store_url = str(tmp_path / "state.db")
    peer = start_peer(peers)
    apply(write_config(tmp_path / "config", server_yaml("desk", peer.port)), store_url)
    daemon = Daemon(settings(store_url=store_url, listen_port=free_port()))

    async def main() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(daemon.run(stop))
        await asyncio.wait_for(daemon.ready.wait(), WAIT_S)
        outbox_id = await asyncio.to_thread(send, store_url, "--to", "jane@corp.example",
                                            "--subject", "all parts")
        await sent(daemon.store, outbox_id)  # type: ignore[arg-type]
        stop.set()
        await asyncio.wait_for(task, WAIT_S)

    run(main)
    assert len(peer.messages) == 1


def test_apply_while_running_changes_routing_without_a_restart(
    store_url: str, tmp_path: Path, peers: list[SmtpPeer]
) -> None:
    old, new = start_peer(peers), start_peer(peers)
    config = tmp_path / "config"
    apply(write_config(config, server_yaml("desk", old.port)), store_url)
    daemon = Daemon(settings(store_url=store_url, reload_interval_seconds=0.05), api=False,
                    health=False)

    async def main() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(daemon.run(stop))
        await asyncio.wait_for(daemon.ready.wait(), WAIT_S)
        store = daemon.store
        assert store is not None and daemon.config is not None
        before = enqueue(store, note("jane@corp.example", subject="before"))  # type: ignore[arg-type]
        await sent(store, before)  # type: ignore[arg-type]
        await asyncio.to_thread(apply, write_config(config, server_yaml("desk", new.port)),
                                store_url)
        await until(lambda: daemon.config.current.revision == 2, "revision 2 to go live")  # type: ignore[union-attr]
        after = enqueue(store, note("jane@corp.example", subject="after"))  # type: ignore[arg-type]
        await sent(store, after)  # type: ignore[arg-type]
        assert daemon.metrics.registry.get_sample_value("reconcile_config_revision") == 2
        stop.set()
        await task

    run(main)
    assert [str(m.message["Subject"]) for m in old.messages] == ["before"]
    assert [str(m.message["Subject"]) for m in new.messages] == ["after"]


def test_two_daemons_on_one_postgresql_store_send_each_message_once(
    postgres_url: str, tmp_path: Path
) -> None:
    count = 300
    with CountingSink(delay=0.002) as sink:
        apply(write_config(tmp_path / "config", server_yaml("desk", sink.port)), postgres_url)
        with open_store(postgres_url) as store:
            store.outbox.enqueue_many([
                EnqueueRequest(note("jane@corp.example", subject=f"shared {i}"), "default")
                for i in range(count)])
        daemons = [Daemon(settings(store_url=postgres_url, worker_id=f"daemon-{n}",
                                   claim_batch=10), api=False, health=False) for n in (1, 2)]

        async def main() -> None:
            stop = asyncio.Event()
            tasks = [asyncio.create_task(d.run(stop)) for d in daemons]
            await until(lambda: len(sink.message_ids()) == count, "every message to arrive")
            store = daemons[0].store
            assert store is not None
            await until(lambda: sum(store.outbox.depth().values()) == 0, "an empty queue")
            stop.set()
            await asyncio.gather(*tasks)

        run(main)
        arrivals = sink.arrivals()
    subjects = sorted(a.subject for a in arrivals)
    assert subjects == sorted(f"shared {i}" for i in range(count))  # each exactly once
    with open_store(postgres_url) as store:
        rows = store.audit.search(status=AuditStatus.SENT, limit=None)
    assert sorted(r.outbox_id for r in rows) == sorted({r.outbox_id for r in rows})
    assert len(rows) == count
    shares = [sum(s.value for m in d.metrics.sends.collect() for s in m.samples
                  if s.name.endswith("_total")) for d in daemons]
    assert sum(shares) == count and all(shares), shares  # both daemons took part


def test_unreachable_store_is_a_clear_error() -> None:
    daemon = Daemon(settings(store_url=f"postgresql://nobody@127.0.0.1:{free_port()}/none"))
    with pytest.raises(DaemonError, match="cannot connect to the PostgreSQL store"):
        asyncio.run(daemon.run())


# -- as a process: signals and crashes ---------------------------------------------------------


def json_lines(log: Path) -> list[dict[str, object]]:
    lines = [line for line in log.read_text().splitlines() if line.strip()]
    parsed = [json.loads(line) for line in lines]  # every line is one JSON object
    for entry in parsed:
        assert {"time", "level", "logger", "message"} <= set(entry), entry
    return parsed


def test_sigterm_stops_gracefully_and_hands_back_unsent_messages(
    store_url: str, tmp_path: Path, peers: list[SmtpPeer]
) -> None:
    peer = start_peer(peers)
    peer.handler.hang_on_data = True
    apply(write_config(tmp_path / "config", server_yaml("desk", peer.port)), store_url)
    with open_store(store_url) as store:
        ids = [enqueue(store, note(f"user{i}@corp.example")) for i in range(3)]
    log = tmp_path / "daemon.log"
    proc = daemon_process(store_url, "--poll-interval", "0.02", "--shutdown-grace", "0.2",
                          log=log)
    try:
        def leased() -> bool:
            with open_store(store_url) as store:
                return all(store.outbox.get(i).state == OutboxState.LEASED  # type: ignore[union-attr]
                           for i in ids)

        wait_for(lambda: proc.poll() is not None or leased(), "the messages to be claimed")
        assert proc.poll() is None, log.read_text()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(WAIT_S) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
    with open_store(store_url) as store:
        for outbox_id in ids:
            msg = store.outbox.get(outbox_id)
            assert msg is not None
            assert (msg.state, msg.lease_owner, msg.attempts) == (OutboxState.QUEUED, None, 0)
    messages = [e["message"] for e in json_lines(log)]
    assert "SIGTERM received: stopping gracefully" in messages
    assert any(str(m).startswith("stopping: released 3") for m in messages), messages


def dumped_subjects(dump: Path) -> list[str]:
    """Subjects of the messages smtp-sink wrote to ``dump`` (one file per message)."""
    subjects = []
    for path in dump.rglob("m.*"):
        for line in path.read_text(errors="replace").splitlines():
            if line.startswith("Subject: "):
                subjects.append(line.removeprefix("Subject: "))
                break
    return subjects


def dumped(dump: Path) -> int:
    return sum(1 for _ in dump.rglob("m.*"))


@pytest.fixture
def dump() -> Iterator[Path]:
    """A folder smtp-sink can write to: it drops to nobody when started as root, and
    pytest's tmp_path is private to its user."""
    path = Path(tempfile.mkdtemp(prefix="reconcile-sink-"))
    path.chmod(0o777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


# The default layout (on a multi-core machine a supervisor: the kill takes the children
# down gracefully) and one process (the kill hits the sender itself, mid-send).
@pytest.mark.parametrize("layout", [(), ("--workers", "0")], ids=["default", "one-process"])
def test_kill_9_in_the_middle_loses_nothing(store_url: str, tmp_path: Path, dump: Path,
                                            layout: tuple[str, ...]) -> None:
    log = tmp_path / "daemon.log"
    args = ("--poll-interval", "0.02", "--lease-seconds", "1", "--claim-batch", "25", *layout)
    # A file per message, in a folder per second so the random file names never collide.
    sink = SmtpSink(options=["-d", f"{dump}/%H%M%S/m."]).start()
    try:
        apply(write_config(tmp_path / "config", server_yaml("desk", sink.port)), store_url)
        with open_store(store_url) as store:
            ids = [r.id for r in store.outbox.enqueue_many([
                EnqueueRequest(note("jane@corp.example", subject=f"crash {i}"), "default",
                               f"crash-{i}") for i in range(CRASH_MESSAGES)])]
        first = daemon_process(store_url, *args, log=log)
        try:
            wait_for(lambda: dumped(dump) >= 150 or first.poll() is not None,
                     "the first daemon to be busy")
            first.kill()  # SIGKILL: no chance to finish, record or release anything
            first.wait(WAIT_S)
        finally:
            if first.poll() is None:
                first.kill()
        with open_store(store_url) as store:
            done_at_kill = {r.outbox_id for r in store.audit.search(status=AuditStatus.SENT,
                                                                    limit=None)}
        assert 0 < len(done_at_kill) < CRASH_MESSAGES, "the kill did not land mid-run"

        second = daemon_process(store_url, *args, log=log)
        try:
            with open_store(store_url) as store:
                wait_for(lambda: sum(store.outbox.depth().values()) == 0
                         or second.poll() is not None, "the restarted daemon to finish")
            assert second.poll() is None, log.read_text()[-3000:]
            second.send_signal(signal.SIGTERM)
            assert second.wait(WAIT_S) == 0
        finally:
            if second.poll() is None:
                second.kill()
    finally:
        sink.stop()

    by_subject = Counter(dumped_subjects(dump))
    assert set(by_subject) == {f"crash {i}" for i in range(CRASH_MESSAGES)}  # none lost
    subject_of = {outbox_id: f"crash {i}" for i, outbox_id in enumerate(ids)}
    resent = {subject for subject, n in by_subject.items() if n > 1}
    # Only sends in flight at the kill may arrive twice; recorded ones never go out again.
    assert not resent & {subject_of[m] for m in done_at_kill}
    assert len(resent) <= 2 * 25  # at most what one daemon holds at once
    with open_store(store_url) as store:
        assert store.outbox.depth(finished=True)[OutboxState.SENT] == CRASH_MESSAGES
        rows = store.audit.search(status=AuditStatus.SENT, limit=None)
    assert sorted(r.outbox_id for r in rows) == sorted(ids)  # one SENT row per message
    json_lines(log)


def test_bad_options_fail_before_anything_starts() -> None:
    runner = CliRunner()
    literal = runner.invoke(cli, ["daemon", "--api-token-ref", "s3cr3t-token-value"])
    assert literal.exit_code == 1
    assert "secret reference" in literal.output and "s3cr3t-token-value" not in literal.output
    missing = runner.invoke(cli, ["daemon", "--api-token-ref", "env:NO_SUCH_TOKEN_VAR_XYZ"])
    assert missing.exit_code == 1 and "env:NO_SUCH_TOKEN_VAR_XYZ" in missing.output
    listen = runner.invoke(cli, ["daemon", "--listen", "localhost"])
    assert listen.exit_code == 1 and "HOST:PORT" in listen.output


def test_daemon_process_reports_an_unreachable_store() -> None:
    done = reconcile("daemon", "--store", f"postgresql://nobody@127.0.0.1:{free_port()}/x",
                     "--listen", f"127.0.0.1:{free_port()}")
    assert done.returncode == 1
    assert "cannot connect to the PostgreSQL store" in done.stderr
