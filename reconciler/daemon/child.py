"""A process the supervisor (daemon.supervisor) started: the ordinary daemon, plus
two duties towards the supervisor.

- **Say when it serves.** The supervisor tells a child that cannot start (a port
  in use, an unreadable store) from one that crashed later by whether the child
  had reported itself serving, not by how long it ran: on a busy machine a start
  that fails may take any time, and a wall-clock limit turned such a failure
  into an endless restart loop. The child writes one byte to its *ready* pipe
  once its parts run and, for the intake, once the API listens.
- **Die with the supervisor.** A child must never outlive it, or it keeps
  serving the port and a restarted daemon cannot bind it. On Linux the kernel
  sends SIGTERM when the supervisor dies, whatever killed it
  (``PR_SET_PDEATHSIG``); everywhere, a thread reads the *lifeline* pipe whose
  only writer is the supervisor, and its end of file means the supervisor is
  gone. Either way the child stops gracefully (in-flight sends finish, the rest
  is released) and kills itself if that takes longer than the grace period and
  a margin, as the supervisor would have.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import dataclasses
import json
import logging
import os
import signal
import sys
import threading
from typing import Any

from reconciler.runtime.access import TokenSpec
from reconciler.runtime.settings import DaemonSettings

SPEC_ENV = "RECONCILE_DAEMON_CHILD"
STOP_MARGIN_S = 10.0
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
_SERVING_POLL_S = 0.01

log = logging.getLogger("reconciler.daemon")


def die_with_parent(sig: signal.Signals = signal.SIGTERM) -> bool:
    """Linux: have the kernel send ``sig`` to this process when its parent dies.

    False where that is not available; the lifeline covers those systems.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def watch_lifeline(fd: int, grace_s: float) -> threading.Thread:
    """Stop this process (SIGTERM, then SIGKILL after ``grace_s``) once ``fd`` reads
    end of file, i.e. once every holder of the pipe's write end has died."""

    def watch() -> None:
        try:
            while os.read(fd, 1):
                pass  # the supervisor never writes; keep reading until EOF
        except OSError as exc:
            # A broken lifeline says nothing about the supervisor: keep serving
            # (on Linux the kernel's signal still comes).
            log.warning("cannot watch the supervisor's lifeline: %s", exc)
            return
        log.error("the supervisor has gone: stopping this process")
        os.kill(os.getpid(), signal.SIGTERM)
        # A graceful stop that hangs must not keep the process (and the port) alive.
        threading.Event().wait(grace_s)
        os.kill(os.getpid(), signal.SIGKILL)

    thread = threading.Thread(target=watch, name="lifeline", daemon=True)
    thread.start()
    return thread


async def _report_serving(daemon: Any, fd: int) -> None:
    """One byte on ``fd`` once every part runs and the API (if any) listens."""
    await daemon.ready.wait()
    # uvicorn has no event for "listening"; `started` turns true once it has bound.
    while daemon.api_server is not None and not daemon.api_server.started:
        await asyncio.sleep(_SERVING_POLL_S)
    with contextlib.suppress(OSError):  # the supervisor died: the lifeline handles that
        os.write(fd, b"r")
    os.close(fd)


async def _serve(settings: DaemonSettings, ready_fd: int) -> None:
    from reconciler.daemon.app import Daemon

    daemon = Daemon(settings, freeze_gc=True)
    report = asyncio.create_task(_report_serving(daemon, ready_fd), name="report-ready")
    try:
        await daemon.run()
    finally:
        report.cancel()


def _settings(values: dict[str, Any]) -> DaemonSettings:
    for f in dataclasses.fields(DaemonSettings):
        if isinstance(values.get(f.name), list):  # JSON has no tuples
            values[f.name] = tuple(values[f.name])
    # asdict made dicts of the token specs; the intake process checks tokens with them.
    values["api_access"] = tuple(TokenSpec.from_json(t) for t in values.get("api_access", ()))
    return DaemonSettings(**values)


def main() -> int:
    """A supervised child: its spec from the environment, then the ordinary daemon."""
    from reconciler.daemon import logs
    from reconciler.daemon.app import DaemonError, loop_factory

    spec: dict[str, Any] = json.loads(os.environ.pop(SPEC_ENV))
    settings = _settings(spec["settings"])
    logs.configure(getattr(logging, str(spec.get("log_level", "info")).upper()))
    die_with_parent()
    watch_lifeline(int(spec["lifeline_fd"]), settings.shutdown_grace_seconds + STOP_MARGIN_S)
    try:
        # The same loop as `reconcile daemon` without --workers (daemon.app.run).
        with asyncio.Runner(loop_factory=loop_factory()) as runner:
            runner.run(_serve(settings, int(spec["ready_fd"])))
    except DaemonError as exc:
        log.error("%s process failed: %s", settings.role, exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
