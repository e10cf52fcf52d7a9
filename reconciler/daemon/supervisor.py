"""``reconcile daemon --workers N``: intake and sending in separate processes.

One asyncio process tops out at one core, and the dispatch daemon's work
splits cleanly in two halves that only meet in the store: the intake API
(HTTP, validation, the outbox insert) and the send workers (claim, compose,
SMTP, results). The supervisor starts

- one **intake** process: the API, metrics, the queue-depth gauge, and a worker
  of its own that takes new messages straight from the intake while it has room
  (the hand-off of daemon.intake: no claim transaction, sent at once);
- N **worker** processes: outbox claims (what the intake process left queued),
  sends, health checks;

each a ``python -m reconciler.daemon.child`` child running the ordinary
:class:`~reconciler.daemon.app.Daemon` with ``role`` set (``all`` for the intake
process, ``worker``), and does nothing else itself: no event loop, no store.
``reconcile daemon`` does this by default on a machine with more than one core
(``--workers auto``, see cli.daemon.auto_workers).

- **Sharing the store.** PostgreSQL claims with ``FOR UPDATE SKIP LOCKED``,
  so workers take different rows. On SQLite every write transaction starts
  with ``BEGIN IMMEDIATE`` and waits (busy timeout) for the one writer; the
  transactions are short and group-committed, so processes take turns.
  Leases are owned per process (``WORKER_ID/worker-1``...), so a crashed
  worker's messages go to the others when its leases run out.
- **Wake-ups.** A pipe from the intake process to the workers (daemon.wake):
  a stored notification wakes a worker at once instead of after its poll
  interval.
- **Metrics.** Children write prometheus_client's multiprocess files in a
  directory the supervisor owns; the intake process serves ``/metrics``
  aggregated over all of them (counters and histograms summed, gauges of
  live processes). The directory is removed on exit.
- **Signals.** SIGTERM/SIGINT is passed to every child, which stops
  gracefully (in-flight sends finish within the grace period, the rest is
  released); children that have not stopped after the grace period and a
  margin are killed.
- **Crashes.** A child that exits on its own is started again after a pause
  that doubles up to a minute (reset once it has run for a minute). A child
  that exits with an error at its very first start, before it reported itself
  serving (a port in use, an unreadable token), stops the whole daemon with
  that error instead of restarting in a loop, however long the failed start
  took (daemon.child).
- **No orphans.** Children die with the supervisor, whatever killed it
  (kill -9 included): see daemon.child.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

from reconciler.daemon.child import SPEC_ENV, STOP_MARGIN_S
from reconciler.runtime.backoff import backoff_seconds
from reconciler.runtime.settings import DaemonSettings

log = logging.getLogger(__name__)

CHILD_MODULE = "reconciler.daemon.child"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
RESTART_PAUSE_S = (1.0, 60.0)
HEALTHY_AFTER_S = 60.0  # a child that ran this long gets the shortest pause again
POLL_S = 0.2


class SupervisorError(Exception):
    """A child could not start; the message says which and why."""


@dataclass
class _Child:
    name: str
    settings: DaemonSettings
    pass_fds: tuple[int, ...]
    proc: subprocess.Popen[bytes] | None = None
    ready_fd: int | None = None  # read end of this start's ready pipe (daemon.child)
    ever_served: bool = False  # some start of it reported itself serving
    started: float = 0.0
    crashes: int = 0  # exits in a row, each after less than HEALTHY_AFTER_S
    restart_at: float | None = None


class Supervisor:
    def __init__(self, settings: DaemonSettings, workers: int, log_level: str = "info") -> None:
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self.settings = settings
        self.workers = workers
        self.log_level = log_level
        self._stopping = False
        self._lifeline_read = -1  # read end of the pipe children watch (daemon.child)

    def run(self) -> None:
        """Start the children and keep them running until SIGTERM/SIGINT."""
        read_fd, write_fd = os.pipe()
        # Only this process holds the write end: children see end of file when it dies.
        self._lifeline_read, lifeline_write = os.pipe()
        metrics_dir = tempfile.mkdtemp(prefix="reconcile-metrics-")
        base = self.settings.worker_id
        # The intake process sends too (role "all"): its own worker takes new messages
        # straight from the intake while it has room (daemon.intake's hand-off: no claim
        # transaction), the worker processes claim what it leaves queued.
        children = [_Child("intake", dataclasses.replace(
            self.settings, role="all", wake_fd=write_fd, worker_id=f"{base}/intake"),
            (write_fd,))]
        children += [_Child(f"worker-{i}", dataclasses.replace(
            self.settings, role="worker", wake_fd=read_fd, worker_id=f"{base}/worker-{i}"),
            (read_fd,)) for i in range(1, self.workers + 1)]
        previous = {sig: signal.signal(sig, self._on_signal)
                    for sig in (signal.SIGTERM, signal.SIGINT)}
        log.info("daemon %s: supervising 1 intake and %d worker processes", base,
                 self.workers, extra={"worker_id": base})
        try:
            for child in children:
                self._start(child, metrics_dir)
            self._watch(children, metrics_dir)
        finally:
            self._stop_all(children)
            for child in children:
                if child.ready_fd is not None:
                    os.close(child.ready_fd)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            os.close(read_fd)
            os.close(write_fd)
            os.close(self._lifeline_read)
            os.close(lifeline_write)
            shutil.rmtree(metrics_dir, ignore_errors=True)
        log.info("daemon %s stopped", base)

    def _on_signal(self, signum: int, _frame: object) -> None:
        if not self._stopping:
            log.info("%s received: stopping the daemon's processes gracefully",
                     signal.Signals(signum).name)
        self._stopping = True

    def _start(self, child: _Child, metrics_dir: str) -> None:
        ready_read, ready_write = os.pipe()
        env = {**os.environ, SPEC_ENV: json.dumps({
            "settings": dataclasses.asdict(child.settings), "log_level": self.log_level,
            "ready_fd": ready_write, "lifeline_fd": self._lifeline_read}),
            MULTIPROC_ENV: metrics_dir}
        try:
            child.proc = subprocess.Popen(
                [sys.executable, "-m", CHILD_MODULE], env=env,
                pass_fds=(*child.pass_fds, ready_write, self._lifeline_read))
        except BaseException:
            os.close(ready_read)
            raise
        finally:
            os.close(ready_write)  # the child's copy is the only writer now
        os.set_blocking(ready_read, False)
        child.ready_fd = ready_read
        child.started = time.monotonic()
        child.restart_at = None
        log.info("started %s process (pid %d)", child.name, child.proc.pid,
                 extra={"child": child.name, "pid": child.proc.pid})

    def _watch(self, children: list[_Child], metrics_dir: str) -> None:
        while not self._stopping:
            now = time.monotonic()
            for child in children:
                if child.proc is not None and (code := child.proc.poll()) is not None:
                    self._exited(child, code, now, metrics_dir)
                elif child.proc is None and child.restart_at is not None \
                        and now >= child.restart_at:
                    self._start(child, metrics_dir)
            self._await_ready(children, POLL_S)

    def _await_ready(self, children: list[_Child], timeout: float) -> None:
        """Wait up to ``timeout`` for news on the ready pipes, and take it."""
        waiting = {c.ready_fd: c for c in children if c.ready_fd is not None}
        if not waiting:
            time.sleep(timeout)
            return
        readable, _, _ = select.select(list(waiting), [], [], timeout)
        for fd in readable:
            self._take_ready(waiting[fd])

    def _take_ready(self, child: _Child) -> None:
        assert child.ready_fd is not None
        try:
            news = os.read(child.ready_fd, 1)
        except BlockingIOError:
            news = b""
        if news and child.proc is not None:
            child.ever_served = True
            log.info("%s process (pid %d) is serving", child.name, child.proc.pid,
                     extra={"child": child.name, "pid": child.proc.pid})
        # One byte, or end of file when the child exited first: either way, done.
        os.close(child.ready_fd)
        child.ready_fd = None

    def _exited(self, child: _Child, code: int, now: float, metrics_dir: str) -> None:
        assert child.proc is not None
        if child.ready_fd is not None:
            self._take_ready(child)  # it may have reported serving just before it exited
        pid, ran = child.proc.pid, now - child.started
        child.proc = None
        _mark_dead(pid, metrics_dir)
        # Its own error exit before it ever served is a start failure (a port in use),
        # however long the start took; death by a signal (an OOM kill, an admin's
        # kill -9) is a crash like any other.
        if not child.ever_served and code > 0:
            raise SupervisorError(f"the {child.name} process exited at start (code {code}); "
                                  "its log lines above say why")
        child.crashes = 1 if ran >= HEALTHY_AFTER_S else child.crashes + 1
        pause = backoff_seconds(child.crashes, *RESTART_PAUSE_S, jitter=0.0)
        log.error("%s process (pid %d) exited with code %d after %.0f s; starting it again "
                  "in %.0f s", child.name, pid, code, ran, pause,
                  extra={"child": child.name, "pid": pid, "exit_code": code})
        child.restart_at = now + pause

    def _stop_all(self, children: list[_Child]) -> None:
        running = [c for c in children if c.proc is not None and c.proc.poll() is None]
        for child in running:
            assert child.proc is not None
            child.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.settings.shutdown_grace_seconds + STOP_MARGIN_S
        for child in running:
            assert child.proc is not None
            try:
                child.proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("%s process (pid %d) did not stop in time; killing it", child.name,
                          child.proc.pid)
                child.proc.kill()
                child.proc.wait()


def _mark_dead(pid: int, metrics_dir: str) -> None:
    # Gauges of a dead process must not be served as if it were alive.
    from prometheus_client import multiprocess

    try:
        multiprocess.mark_process_dead(pid, metrics_dir)
    except OSError as exc:
        log.warning("cannot drop the metrics of pid %d: %s", pid, exc)


def supervise(settings: DaemonSettings, workers: int, log_level: str = "info") -> None:
    Supervisor(settings, workers, log_level).run()
