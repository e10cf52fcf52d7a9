"""Helpers for the history, drift, live and lock CLI tests.

Every command is driven through the real `reconcile` group against a real
store (SQLite file or PostgreSQL database from ``peers.postgres``).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner, Result

from reconciler.cli.main import cli
from reconciler.config.desired import ResourceKey
from reconciler.state import open_store

GMAIL = ResourceKey("OutgoingServer", "acme", "gmail-notifications")
HR = ResourceKey("OutgoingServer", "acme", "o365-hr")


def run(*args: str | Path, code: int | None = 0, env: dict[str, str] | None = None) -> Result:
    """Invoke `reconcile ARGS`; check the exit code and that nothing crashed."""
    result = CliRunner().invoke(cli, [str(a) for a in args], env=env)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"reconcile {args} crashed: {result.exception!r}\n{result.output}"
                             ) from result.exception
    if code is not None:
        assert result.exit_code == code, (
            f"reconcile {' '.join(map(str, args))}: exit {result.exit_code}, want {code}\n"
            f"{result.output}")
    return result


def run_installed(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """The real entry point, with its own exit-code handling (cli.common.run)."""
    exe = shutil.which("reconcile")
    command = [exe] if exe else [sys.executable, "-c",
                                 "from reconciler.cli.main import main; main()"]
    return subprocess.run([*command, *map(str, args)], capture_output=True, text=True,
                          check=False)


def assert_user_error(result: Result, *fragments: str) -> None:
    """Exit 1 with one plain message: no traceback, nothing but the error."""
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert result.output.count("Error:") == 1, result.output
    for fragment in fragments:
        assert fragment in result.output, result.output


def apply(config: Path, store: str, *, actor: str = "ci-bot", message: str = "") -> Result:
    return run("apply", config, "--store", store, "--yes", "--actor", actor,
               "--message", message)


def live_set(store: str, resource: str, *assignments: str, actor: str = "alice",
             reason: str = "", code: int = 0) -> Result:
    return run("live", "set", resource, *assignments, "--store", store, "--actor", actor,
               "--reason", reason, code=code)


def fingerprint(store: str) -> tuple[int, str, dict[ResourceKey, str]]:
    """Head, head hash and every live digest: equal before and after means untouched."""
    with open_store(store) as s:
        head = s.head()
        revs = s.revisions()
        return (head, revs[0].hash if revs else "",
                {r.key: r.digest for r in s.snapshot()})
