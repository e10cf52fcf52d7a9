"""The reconciler side of the dispatch benchmark: store, config, daemon, load.

One run: a fresh store (a SQLite file in a temp dir, or a PostgreSQL schema of
its own that is dropped afterwards), a one-server config applied to it with
``reconcile apply`` (the OutgoingServer points at the bench sink, security
none, no auth, primary), ``reconcile daemon`` started as a subprocess with an
API token given as an ``env:`` reference, notifications posted over HTTP, and
arrivals counted at the sink. The daemon is always stopped (SIGTERM, then
SIGKILL by its pid) and the schema always dropped, also on errors and Ctrl-C.

Profiling (``--profile``):

- ``py-spy``: attaches to the daemon's pid for the measured phase only,
  sampling the thread that holds the GIL (``--gil``: the daemon is one Python
  process, so GIL time is what caps it), and writes a flame graph (SVG) plus a
  collapsed-stack file. Printed: how busy the GIL was, shares by area
  (compose, HTTP API, SQL, SMTP, ...; see AREAS), by thread, by leaf function
  and by the project's own functions inclusive. ``pip install py-spy``.
- ``cprofile``: runs the daemon under ``python -m cProfile -o FILE``; the
  profile is written when the daemon exits after SIGTERM. cProfile sees the
  main thread (event loop) only, not the store's worker threads.

``BENCH_DAEMON_PYTHON=/path/to/python`` runs the daemon (and apply) with
another interpreter, e.g. a venv made with ``--system-site-packages`` plus
uvloop and httptools, to measure what they would change.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

from _cpu import tree_cpu
from _httpfeed import NAMESPACE, post_all, post_all_raw
from _postfix import free_port
from _sink import Sink, bench_id
from _stats import RunResult

PG_HOST = "127.0.0.1"
PG_PORT = 5432
PG_USERS = ("postgres", "root")
PG_DATABASES = ("test", "postgres")
TOKEN_ENV = "RECONCILE_BENCH_API_TOKEN"
START_WAIT_S = 60.0
STOP_WAIT_S = 30.0
SPY_RATE = 250  # samples/s; with --gil, only the thread holding the GIL is sampled

# Where the daemon's time goes, by the innermost frame that names a part of it
# (scanned from the leaf up, so "compose" wins over the worker that called it).
AREAS: tuple[tuple[str, str], ...] = (
    ("email_validator/", "address validation (email_validator)"),
    ("pydantic", "pydantic validation"),
    ("logging/", "logging"),
    ("Envelope.as_bytes", "message serialisation (email generator)"),
    ("dispatch/compose.py", "compose (email.message headers/MIME)"),
    ("transports/", "SMTP transport (aiosmtplib, pool)"),
    ("mail/smtp/", "SMTP transport (aiosmtplib, pool)"),
    ("mail/results.py", "logging"),
    ("aiosmtplib/", "SMTP transport (aiosmtplib, pool)"),
    ("sqlalchemy/", "store: SQL (SQLAlchemy, driver)"),
    ("sqlite3", "store: SQL (SQLAlchemy, driver)"),
    ("psycopg", "store: SQL (SQLAlchemy, driver)"),
    ("state/", "store: outbox/audit code"),
    ("daemon/intake.py", "intake group commit"),
    ("dispatch/group_commit.py", "result group commit"),
    ("prometheus_client/", "metrics"),
    ("fastapi/", "HTTP API (uvicorn, Starlette, FastAPI)"),
    ("starlette/", "HTTP API (uvicorn, Starlette, FastAPI)"),
    ("uvicorn/", "HTTP API (uvicorn, Starlette, FastAPI)"),
    ("daemon/", "HTTP API (uvicorn, Starlette, FastAPI)"),
    ("dispatch/", "worker (routing, filters, bookkeeping)"),
    ("concurrent/futures/", "thread pool hand-off"),
    ("threading.py", "thread pool hand-off"),
    ("anyio/", "thread pool hand-off"),
    ("asyncio/", "event loop (asyncio)"),
)

CONFIG = """\
# Written by bench/_daemon.py: one SMTP server, the bench sink, for every message.
apiVersion: reconciler.dev/v1
kind: OutgoingServer
metadata:
  name: sink
  namespace: {namespace}
  labels: {{env: dev}}   # exempt from the tls-required policy: the sink speaks plain SMTP
spec:
  email: desk@bench.example
  senderName: Bench Desk
  replyTo: desk@bench.example
  protocol: smtp
  host: 127.0.0.1
  port: {port}
  security: none
  primary: true
  maxConcurrency: {max_concurrency}
  timeoutSeconds: 30
"""

Log = Callable[[str], None]
WaitFor = Callable[[Callable[[], int], int, float, str], int]


def daemon_python() -> str:
    # Another interpreter (a venv with uvloop/httptools, say) to try the daemon on.
    return os.environ.get("BENCH_DAEMON_PYTHON") or sys.executable


def reconcile_command() -> list[str]:
    return [daemon_python(), "-m", "reconciler"]


@contextlib.contextmanager
def fresh_store(kind: str, tmp: Path, log: Log) -> Iterator[str]:
    """A store URL nobody used before; a PostgreSQL schema is dropped afterwards."""
    if kind == "sqlite":
        (tmp / "state").mkdir(exist_ok=True)  # apply creates a store only in an existing folder
        yield str(tmp / "state" / "state.db")
        return
    import psycopg
    from psycopg import sql

    conn = None
    for user in PG_USERS:
        for dbname in PG_DATABASES:
            with contextlib.suppress(psycopg.OperationalError):
                conn = psycopg.connect(host=PG_HOST, port=PG_PORT, user=user, dbname=dbname,
                                       autocommit=True, connect_timeout=5)
                break
        if conn is not None:
            break
    if conn is None:
        raise RuntimeError(f"PostgreSQL at {PG_HOST}:{PG_PORT} is not reachable as "
                           f"{'/'.join(PG_USERS)} (database {'/'.join(PG_DATABASES)})")
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    info = conn.info
    with conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        try:
            log(f"  PostgreSQL schema {schema} in {info.user}@{info.host}/{info.dbname}")
            yield (f"postgresql://{info.user}@{PG_HOST}:{PG_PORT}/{info.dbname}"
                   f"?options=-csearch_path%3D{schema}")
        finally:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(
                sql.Identifier(schema)))


def apply_config(store_url: str, sink_port: int, max_concurrency: int, tmp: Path) -> None:
    config = tmp / "config"
    config.mkdir()
    (config / "bench.yaml").write_text(CONFIG.format(
        namespace=NAMESPACE, port=sink_port, max_concurrency=max_concurrency))
    done = subprocess.run([*reconcile_command(), "apply", str(config), "--store", store_url,
                           "--yes"], capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"reconcile apply failed:\n{done.stdout}\n{done.stderr}")


class Daemon:
    """``reconcile daemon`` as a subprocess, stopped by its pid."""

    def __init__(self, store_url: str, port: int, token: str, tmp: Path,
                 profile: str | None, extra_args: tuple[str, ...] = ()) -> None:
        self.extra_args = extra_args
        self.store_url = store_url
        self.port = port
        self.token = token
        self.tmp = tmp
        self.profile = profile
        self.log_path = tmp / "daemon.log"
        # Outside the work dir, which is removed after the run.
        self.cprofile_path = Path(tempfile.gettempdir()) / f"{tmp.name}.cprofile"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        args = ["daemon", "--store", self.store_url, "--listen", f"127.0.0.1:{self.port}",
                "--api-token", f"env:{TOKEN_ENV}", *self.extra_args]
        if self.profile == "cprofile":
            return [daemon_python(), "-m", "cProfile", "-o", str(self.cprofile_path),
                    "-m", "reconciler", *args]
        return [*reconcile_command(), *args]

    def start(self) -> Daemon:
        env = {**os.environ, TOKEN_ENV: self.token}
        with self.log_path.open("wb") as out:
            # Own session: Ctrl-C reaches only us, and we stop the daemon in order.
            self.proc = subprocess.Popen(self.command(), stdout=out, stderr=subprocess.STDOUT,
                                         env=env, start_new_session=True)
        deadline = time.monotonic() + START_WAIT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"reconcile daemon exited at start "
                                   f"(code {self.proc.returncode}):\n{self.log_tail()}")
            with contextlib.suppress(OSError), \
                    urllib.request.urlopen(f"{self.base_url}/healthz", timeout=1) as answer:
                if answer.status == 200:
                    return self
            time.sleep(0.1)
        raise RuntimeError(f"reconcile daemon did not answer /healthz within "
                           f"{START_WAIT_S:.0f} s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(STOP_WAIT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no daemon log)"
        return "\n".join(text[-lines:])


class PySpy:
    """py-spy attached to a pid while a block runs."""

    def __init__(self, pid: int, out: Path) -> None:
        binary = shutil.which("py-spy")
        if binary is None:
            raise RuntimeError("py-spy is not installed: `pip install py-spy`")
        self.binary = binary
        self.pid = pid
        self.svg = out.with_suffix(".svg")
        self.raw = out.with_suffix(".txt")
        self._procs: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> PySpy:
        # Two recorders: the SVG for people, the collapsed stacks for the summary.
        for fmt, path in (("flamegraph", self.svg), ("raw", self.raw)):
            self._procs.append(subprocess.Popen(
                [self.binary, "record", "--pid", str(self.pid), "--rate", str(SPY_RATE),
                 "--gil", "--threads", "--nonblocking", "--subprocesses", "--format", fmt,
                 "--output", str(path)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        time.sleep(1.0)  # py-spy needs a moment to attach
        self._started = time.monotonic()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.monotonic() - self._started
        for proc in self._procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
        for proc in self._procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def summary(self, top: int = 20) -> str:
        return summarize_collapsed(self.raw, top, self.seconds * SPY_RATE)


def _area(frames: list[str]) -> str:
    for frame in reversed(frames):
        for marker, area in AREAS:
            if marker in frame:
                return area
    return "other"


def summarize_collapsed(path: Path, top: int = 20, possible: float = 0.0) -> str:
    """Where the GIL went: per area, thread and function, from py-spy's collapsed stacks."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    processes: Counter[str] = Counter()
    areas: Counter[str] = Counter()
    total = 0
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return f"(no py-spy output at {path})"
    for line in lines:
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        # --subprocesses: with --workers the supervisor's children are sampled too, each
        # stack under its process and the process's parents.
        own_process = ""
        while frames[0].startswith("process ") and len(frames) > 1:
            own_process, frames = _process(frames[0]), frames[1:]
        if own_process:
            processes[own_process] += count
        total += count
        thread = frames[0]
        # "thread (0x7f..)" names are per run; the thread's name after the colon is stable.
        threads[thread.split(": ", 1)[-1] if ": " in thread else thread] += count
        areas[_area(frames[1:])] += count
        names = [_short(f) for f in frames[1:]] or [frames[0]]
        own[names[-1]] += count
        # Inclusive time of the project's own functions only; the entry points
        # (cli, asyncio.run, Daemon.run) would fill the top with 100 % rows.
        for name in {_short(f) for f in frames[1:] if "reconciler/" in f
                     and "reconciler/cli/" not in f and "__main__" not in f
                     and not f.startswith(("run (", "Daemon.run", "Daemon._run"))}:
            inclusive[name] += count
    if not total:
        return "(py-spy recorded no samples)"

    def block(title: str, counts: Counter[str]) -> list[str]:
        rows = [title]
        for name, count in counts.most_common(top):
            rows.append(f"  {100 * count / total:5.1f}%  {name}")
        return rows

    busy = f", GIL held {100 * total / possible:.0f}% of the time" if possible else ""
    out = [f"py-spy --gil: {total} samples at {SPY_RATE}/s{busy}; shares of GIL time"]
    out += block("by area (innermost matching frame):", areas)
    if len(processes) > 1:
        out += block("by process:", processes)
    out += block("by thread:", threads)
    out += block("own time (leaf frames):", own)
    out += block("inclusive time of reconciler functions:", inclusive)
    return "\n".join(out)


def _process(frame: str) -> str:
    # 'process 123:"python -m reconciler.daemon.child"': the role is in its log, not
    # its command line, so pids it is (the supervisor's log names each child's pid).
    return frame.split(":", 1)[0]


def _short(frame: str) -> str:
    # "function (path/to/module.py:123)" -> "function (module.py)": lines split one function.
    name, _, where = frame.partition(" (")
    where = where.rstrip(")").rsplit(":", 1)[0]
    parts = where.split("/")
    tail = "/".join(parts[-2:]) if len(parts) > 1 else where
    return f"{name} ({tail})"


def run_daemon_bench(store: str, *, n: int, concurrency: int, warmup: int, timeout_s: float,
                     profile: str | None, log: Log, wait_for: WaitFor,
                     max_concurrency: int = 16, client: str = "raw",
                     daemon_args: tuple[str, ...] = (), label: str | None = None
                     ) -> RunResult:
    poster = post_all_raw if client == "raw" else post_all
    run = uuid.uuid4().hex[:8]
    system = label or f"reconciler/{store}"
    deadline = time.monotonic() + timeout_s
    token = secrets.token_urlsafe(32)
    keep = os.environ.get("BENCH_KEEP_DAEMON")
    tmp = Path(tempfile.mkdtemp(prefix=f"bench-daemon-{store}-"))
    profile_report = ""
    try:
        with fresh_store(store, tmp, log) as store_url, Sink(free_port()) as sink:
            apply_config(store_url, sink.port, max_concurrency, tmp)
            daemon = Daemon(store_url, free_port(), token, tmp, profile, daemon_args)
            try:
                daemon.start()
                log(f"{system}: daemon pid {daemon.proc.pid if daemon.proc else '?'} on "
                    f"{daemon.base_url}, sink on :{sink.port}, work dir {tmp}")
                if warmup:
                    warm = asyncio.run(poster(daemon.base_url, token,
                                              [bench_id(f"w{run}", i) for i in range(warmup)],
                                              min(concurrency, warmup)))
                    if warm.errors:
                        raise RuntimeError(f"warm-up failed: {warm.errors[0]}\n"
                                           f"{daemon.log_tail()}")
                    wait_for(lambda: sink.delivered, len(warm.accepted), deadline,
                             f"{system} warm-up")
                base = sink.delivered
                ids = [bench_id(run, i) for i in range(n)]
                log(f"{system}: posting {n} x 4 KB with {concurrency} HTTP clients ({client})")
                spy: contextlib.AbstractContextManager[object] = contextlib.nullcontext()
                if profile == "py-spy" and daemon.proc is not None:
                    spy = PySpy(daemon.proc.pid, Path(tempfile.gettempdir())
                                / f"bench-dispatch-{store}-{run}")
                pid = daemon.proc.pid if daemon.proc else 0
                with spy:
                    daemon_cpu = tree_cpu(pid)  # with --workers N: its children too
                    cpu_before = os.times()
                    fed = asyncio.run(poster(daemon.base_url, token, ids, concurrency))
                    cpu_after = os.times()
                    wait_for(lambda: sink.delivered - base, len(fed.accepted), deadline, system)
                    daemon_cpu = tree_cpu(pid) - daemon_cpu
                if isinstance(spy, PySpy):
                    profile_report = (f"{spy.summary()}\nflame graph: {spy.svg}\n"
                                      f"collapsed stacks: {spy.raw}")
            finally:
                daemon.stop()
            arrivals = sink.stop()
    finally:
        if not keep:
            shutil.rmtree(tmp, ignore_errors=True)
    measured = {k: v for k, v in arrivals.first.items() if k.startswith(f"bid-{run}-")}
    result = RunResult.measure(system, n, fed.started, fed.accepted, measured,
                               duplicates=arrivals.duplicates)
    result.errors = fed.errors
    result.cpu_s = daemon_cpu
    if store == "postgresql":
        result.notes.append("CPU ms/msg counts the daemon only, not the PostgreSQL server")
    client_cpu = (cpu_after.user + cpu_after.system) - (cpu_before.user + cpu_before.system)
    result.notes.append(f"load generator ({client} client) used {client_cpu:.1f} s CPU "
                        "while posting")
    if arrivals.duplicates:
        result.notes.append(f"{arrivals.duplicates} messages delivered more than once")
    if profile == "cprofile":
        result.notes.append(f"cProfile output: {daemon.cprofile_path} "
                            "(python -m pstats FILE; main thread only)")
    if profile_report:
        result.notes.append(profile_report)
    return result
