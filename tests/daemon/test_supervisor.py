"""`reconcile daemon --workers N` as a real process tree: one intake and N worker
processes sharing the store (SQLite and PostgreSQL), messages delivered to a real SMTP
peer exactly once, metrics summed over the processes, a killed worker started again,
SIGTERM stopping everything gracefully."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
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
        return httpx.get(f"{base}/healthz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def metric(base: str, name: str) -> float:
    text = httpx.get(f"{base}/metrics", timeout=10).text
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
            wait_for(lambda: proc.poll() is not None or healthy(base), "the intake API")
            assert proc.poll() is None, log.read_text()
            first = [post(base, i) for i in range(20)]
            wait_for(lambda: settled(store_url), "the first messages to be recorded")
            pids = children(log)
            assert set(pids) == {"intake", "worker-1", "worker-2"}

            os.kill(pids["worker-1"], signal.SIGKILL)
            wait_for(lambda: children(log)["worker-1"] != pids["worker-1"],
                     "worker-1 to be started again")
            second = [post(base, i) for i in range(20, 40)]
            wait_for(lambda: sink.count() >= 40, "the messages after the restart")
            # Counters of every process, the killed one's included, add up on /metrics.
            wait_for(lambda: metric(base, "reconcile_sends_total") >= 40, "summed metrics")
            assert metric(base, "reconcile_intake_accepted_total") == 40

            proc.send_signal(signal.SIGTERM)
            assert proc.wait(60) == 0, log.read_text()
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
    assert {e.get("role") for e in entries if "running: store" in str(e["message"])} == {
        "intake", "worker"}


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
            code = proc.wait(60)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert code == 1, log.read_text()
    assert "the intake process exited at start" in log.read_text()


@pytest.mark.parametrize("args", [("--workers", "1", "--role", "worker")])
def test_workers_and_role_together_are_refused(args: tuple[str, ...]) -> None:
    result = CliRunner().invoke(cli, ["daemon", "--store", "x.db", *args])
    assert result.exit_code != 0
    assert "--workers starts both roles itself" in result.output
