"""`reconcile daemon --workers N` as a real process tree: one intake and N worker
processes sharing the store (SQLite and PostgreSQL), messages delivered to a real SMTP
peer exactly once, metrics summed over the processes, a killed worker started again,
SIGTERM stopping everything gracefully, children that never outlive the supervisor.

Every wait here is for a condition, with deadlines meant for a machine busy with
other work (a second test suite, say): nothing depends on how fast a process starts.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from peers.smtp import free_port
from prometheus_client.parser import text_string_to_metric_families

from reconciler.cli.main import cli
from reconciler.state import open_store

from .app_kit import HOST, CountingSink, server_yaml, wait_for, write_config

TOKEN_ENV = "RECONCILE_TEST_SUPERVISOR_TOKEN"
TOKEN = "supervisor-test-token-5d1e0c7a"
# Starting three Python processes that import the whole daemon can take a minute on a
# machine running two test suites at once; these deadlines only bound a failing test.
START_S = 180.0
STOP_S = 120.0
# Longer than the 5 s within which the supervisor used to expect a failing start to fail.
SLOW_START_S = 8.0


def start(store_url: str, port: int, log: Path, *args: str) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "reconciler", "daemon", "--store", store_url,
               "--listen", f"{HOST}:{port}", "--api-token", f"env:{TOKEN_ENV}",
               "--poll-interval", "0.05", "--lease-seconds", "2", "--shutdown-grace", "1", *args]
    with log.open("ab") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, TOKEN_ENV: TOKEN})


def lines(log: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in log.read_text().splitlines() if x.strip()]


def children(log: Path) -> dict[str, int]:
    """Child name -> pid of its latest start, from the supervisor's log."""
    found: dict[str, int] = {}
    for entry in lines(log):
        if str(entry["message"]).startswith("started ") and "child" in entry:
            found[str(entry["child"])] = int(entry["pid"])
    return found


def post(base: str, i: int) -> int:
    body = {"module": "request", "to": [f"user{i}@corp.example"], "subject": f"split {i}",
            "textBody": "hello"}
    response = httpx.post(f"{base}/v1/notifications", json=body, timeout=30,
                          headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 202, response.text
    return int(response.json()["id"])


def healthy(base: str) -> bool:
    try:
        return httpx.get(f"{base}/healthz", timeout=10).status_code == 200
    except httpx.TransportError:
        return False


def metric(base: str, name: str) -> float:
    # /metrics needs a token once any is configured (docs/access.md)
    text = httpx.get(f"{base}/metrics", timeout=60,
                     headers={"Authorization": f"Bearer {TOKEN}"}).text
    return sum(s.value for family in text_string_to_metric_families(text)
               for s in family.samples if s.name == name)


def settled(store_url: str) -> bool:
    """Every message recorded as finished: no worker holds anything in flight."""
    with open_store(store_url) as store:
        return sum(store.outbox.depth().values()) == 0


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # an exited orphan waiting for init to reap it is not running
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[0] != "Z"


def listening(port: int) -> bool:
    try:
        socket.create_connection((HOST, port), timeout=10).close()
    except OSError:
        return False
    return True


def test_workers_share_the_outbox_restart_after_a_crash_and_stop_together(
    store_url: str, tmp_path: Path
) -> None:
    with CountingSink() as sink:
        config = write_config(tmp_path / "config", server_yaml("desk", sink.port))
        applied = CliRunner().invoke(cli, ["apply", str(config), "--store", store_url, "--yes"])
        assert applied.exit_code == 0, applied.output
        port = free_port()
        base = f"http://{HOST}:{port}"
        log = tmp_path / "daemon.log"
        proc = start(store_url, port, log, "--workers", "2")
        try:
            wait_for(lambda: proc.poll() is not None or healthy(base), "the intake API",
                     START_S)
            assert proc.poll() is None, log.read_text()
            first = [post(base, i) for i in range(20)]
            wait_for(lambda: settled(store_url), "the first messages to be recorded", STOP_S)
            pids = children(log)
            assert set(pids) == {"intake", "worker-1", "worker-2"}

            os.kill(pids["worker-1"], signal.SIGKILL)
            wait_for(lambda: children(log)["worker-1"] != pids["worker-1"],
                     "worker-1 to be started again", START_S)
            second = [post(base, i) for i in range(20, 40)]
            wait_for(lambda: sink.count() >= 40, "the messages after the restart", START_S)
            # Counters of every process, the killed one's included, add up on /metrics.
            wait_for(lambda: metric(base, "reconcile_sends_total") >= 40, "summed metrics",
                     STOP_S)
            assert metric(base, "reconcile_intake_accepted_total") == 40

            proc.send_signal(signal.SIGTERM)
            assert proc.wait(STOP_S) == 0, log.read_text()
        finally:
            if proc.poll() is None:
                proc.kill()
        subjects = sorted(a.subject for a in sink.arrivals())
    assert len(set(first + second)) == 40
    # Exactly once: the kill hit an idle worker (everything recorded), nothing to resend.
    assert subjects == sorted(f"split {i}" for i in range(40))
    entries = lines(log)
    messages = [str(e["message"]) for e in entries]
    assert any(m.startswith("worker-1 process (pid") and "starting it again" in m
               for m in messages), messages
    assert "SIGTERM received: stopping the daemon's processes gracefully" in messages
    assert not any(alive(pid) for pid in children(log).values())
    # The intake process sends too (what it can take at once), the workers the rest.
    assert {e.get("role") for e in entries if "running: store" in str(e["message"])} == {
        "all", "worker"}


def test_a_child_that_cannot_start_fails_the_daemon(tmp_path: Path) -> None:
    store_url = str(tmp_path / "state.db")  # the store plays no part: one run is enough
    open_store(store_url).close()  # but it must exist: the daemon never creates one
    taken = free_port()
    log = tmp_path / "daemon.log"
    with socket.socket() as holder:
        holder.bind((HOST, taken))
        holder.listen()
        proc = start(store_url, taken, log, "--workers", "1")
        try:
            code = proc.wait(START_S)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert code == 1, log.read_text()
    assert "the intake process exited at start" in log.read_text()


def test_a_start_that_fails_late_still_fails_the_daemon(tmp_path: Path) -> None:
    """A failing start may take any time (a busy machine, a store another writer holds):
    it is still a start failure, not a crash to restart for ever."""
    store_path = tmp_path / "state.db"
    open_store(str(store_path)).close()  # the daemon never creates a store
    taken = free_port()
    log = tmp_path / "daemon.log"
    # Another writer holds the store: the children's first writes wait for it.
    writer = sqlite3.connect(store_path, isolation_level=None)
    writer.execute("PRAGMA journal_mode=WAL")
    writer.execute("BEGIN IMMEDIATE")
    with socket.socket() as holder:
        holder.bind((HOST, taken))
        holder.listen()
        proc = start(str(store_path), taken, log, "--workers", "1")
        try:
            wait_for(lambda: "intake" in children(log), "the intake to be started", START_S)
            time.sleep(SLOW_START_S)  # the slow part of the start, not a wait for a result
            released = datetime.now(UTC)
            writer.execute("ROLLBACK")
            code = proc.wait(START_S)
        finally:
            writer.close()
            if proc.poll() is None:
                proc.kill()
    text = log.read_text()
    assert code == 1, text
    assert "the intake process exited at start" in text
    assert text.count("started intake process") == 1, text  # never restarted
    # The start really was held up by the writer: it ended only after the release.
    [ended] = [json.loads(x) for x in text.splitlines()
               if x.startswith("{") and "the intake process exited at start" in x]
    assert datetime.fromisoformat(str(ended["time"]).replace("Z", "+00:00")) >= released, text


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGABRT])
def test_children_die_with_the_supervisor_and_a_restart_serves_again(
    sig: signal.Signals, tmp_path: Path
) -> None:
    store_url = str(tmp_path / "state.db")
    open_store(store_url).close()  # the daemon never creates a store
    port = free_port()
    base = f"http://{HOST}:{port}"
    first_log, second_log = tmp_path / "first.log", tmp_path / "second.log"
    proc = start(store_url, port, first_log, "--workers", "1")
    pids: dict[str, int] = {}
    second: subprocess.Popen[bytes] | None = None
    try:
        wait_for(lambda: proc.poll() is not None or healthy(base), "the first daemon",
                 START_S)
        assert proc.poll() is None, first_log.read_text()
        pids = children(first_log)
        assert set(pids) == {"intake", "worker-1"}

        os.kill(proc.pid, sig)
        proc.wait(STOP_S)
        wait_for(lambda: not any(alive(pid) for pid in pids.values()),
                 "the children of the killed supervisor to exit", STOP_S)
        wait_for(lambda: not listening(port), "the port to be free", STOP_S)

        second = start(store_url, port, second_log, "--workers", "1")
        wait_for(lambda: second.poll() is not None or healthy(base), "the second daemon",
                 START_S)
        assert second.poll() is None, second_log.read_text()
        second.send_signal(signal.SIGTERM)
        assert second.wait(STOP_S) == 0, second_log.read_text()
    finally:
        for p in (proc, second):
            if p is not None and p.poll() is None:
                p.kill()
        for pid in pids.values():  # orphans of a supervisor that did not take them along
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
    # They stopped gracefully (in-flight sends finish, leases are released), not killed.
    messages = [str(e["message"]) for e in lines(first_log)]
    for name in ("intake", "worker-1"):
        assert any(m.startswith("daemon ") and m.endswith(f"/{name} stopped")
                   for m in messages), messages


_LIFELINE_PARENT = textwrap.dedent("""
    import os, subprocess, sys
    read_fd, write_fd = os.pipe()
    child = subprocess.Popen([sys.executable, "-c", sys.argv[1]], pass_fds=(read_fd,),
                             env={**os.environ, "LIFELINE_FD": str(read_fd)})
    os.close(read_fd)
    child.wait()  # until this process is killed
""")
_LIFELINE_CHILD = textwrap.dedent("""
    import os, signal, sys, time
    from reconciler.daemon.child import watch_lifeline
    if os.environ.get("IGNORE_SIGTERM"):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a graceful stop that hangs
    watch_lifeline(int(os.environ["LIFELINE_FD"]), grace_s=1.0)
    print(os.getpid(), flush=True)
    while True:
        time.sleep(1)
""")


@pytest.mark.parametrize("ignores_sigterm", [False, True])
def test_the_lifeline_stops_a_child_whose_parent_died_without_a_kernel_signal(
    ignores_sigterm: bool,
) -> None:
    """The fallback where PR_SET_PDEATHSIG does not exist: only the pipe tells the child."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    if ignores_sigterm:
        env["IGNORE_SIGTERM"] = "1"
    parent = subprocess.Popen([sys.executable, "-c", _LIFELINE_PARENT, _LIFELINE_CHILD],
                              stdout=subprocess.PIPE, text=True, env=env)
    child_pid = 0
    try:
        assert parent.stdout is not None
        line = parent.stdout.readline()  # blocks until the child is armed (or gone)
        assert line.strip().isdigit(), f"the child did not arm its lifeline: {line!r}"
        child_pid = int(line)
        assert alive(child_pid)
        parent.kill()
        parent.wait(STOP_S)
        wait_for(lambda: not alive(child_pid), "the orphaned child to exit", STOP_S)
    finally:
        if parent.poll() is None:
            parent.kill()
        if child_pid and alive(child_pid):
            os.kill(child_pid, signal.SIGKILL)


@pytest.mark.parametrize("args", [("--workers", "1", "--role", "worker")])
def test_workers_and_role_together_are_refused(args: tuple[str, ...]) -> None:
    result = CliRunner().invoke(cli, ["daemon", "--store", "x.db", *args])
    assert result.exit_code != 0
    assert "--workers starts both roles itself" in result.output
