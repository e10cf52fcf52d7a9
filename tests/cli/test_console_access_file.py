"""``reconcile daemon --access-file``: the file's ``console:`` / ``oidc:`` sections are
read (docs/console.md), an option given on the command line wins over the file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
import httpx
from click.testing import CliRunner
from daemon.app_kit import HOST, daemon_process, wait_for
from peers.smtp import free_port

from reconciler.cli.console import console_options, console_settings
from reconciler.state import open_store

FROM_FILE = {"console": True, "console_oidc_label": "Example Login",
             "console_oidc_role_map": ("desk-ops=operator",), "console_session_hours": 2.0}


@click.command()
@console_options
def show(**given: Any) -> None:
    click.echo(json.dumps(console_settings(given, FROM_FILE)))


def _settings(*args: str) -> dict[str, Any]:
    result = CliRunner().invoke(show, list(args))
    assert result.exit_code == 0, result.output
    return dict(json.loads(result.output))


def test_the_file_fills_what_the_command_line_leaves_at_its_default() -> None:
    got = _settings()
    assert got["console"] is True and got["console_oidc_label"] == "Example Login"
    assert got["console_oidc_role_map"] == ["desk-ops=operator"]
    assert got["console_session_hours"] == 2.0
    assert got["console_oidc_name_claim"] == "email"  # neither gave it: the default


def test_an_option_on_the_command_line_wins_over_the_file() -> None:
    got = _settings("--no-console", "--console-oidc-label", "Corp SSO",
                    "--console-oidc-role", "admins=admin", "--console-session-hours", "8")
    assert got["console"] is False and got["console_oidc_label"] == "Corp SSO"
    assert got["console_oidc_role_map"] == ["admins=admin"]
    assert got["console_session_hours"] == 8.0


def _serves_console(tmp_path: Path, *flags: str) -> int:
    """Start the daemon with an access file switching the console on; the status of
    GET /console/signin once it answers."""
    store = tmp_path / "state.db"
    open_store(store).close()
    access = tmp_path / "access.yaml"
    access.write_text("console:\n  enabled: true\noidc:\n  label: Example Login\n")
    port = free_port()
    log = tmp_path / "daemon.log"
    proc = daemon_process(str(store), "--listen", f"{HOST}:{port}", "--access-file",
                          str(access), *flags, log=log)

    def answer() -> int | None:
        try:
            return httpx.get(f"http://{HOST}:{port}/console/signin", timeout=2).status_code
        except httpx.TransportError:
            return None

    try:
        wait_for(lambda: proc.poll() is not None or answer() is not None,
                 "the daemon to answer")
        assert proc.poll() is None, log.read_text()[-3000:]
        status = answer()
        assert status is not None
        return status
    finally:
        proc.terminate()
        proc.wait(30)


def test_the_daemon_serves_the_console_the_access_file_switches_on(tmp_path: Path) -> None:
    assert _serves_console(tmp_path) == 200
    assert _serves_console(tmp_path / "off", "--no-console") == 404
