"""A mistyped store never becomes a new empty store (issue 11 item 8).

Only `reconcile apply` creates a store, and only in a folder that exists (or
the default `.reconcile/`); every other command on a store that is not there
says so, exits 1 and leaves nothing behind. Runs the real commands on real
SQLite files and a real PostgreSQL server.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from peers.postgres import PostgresServer
from peers.smtp import free_port
from plan.kit import EXAMPLES, example_count
from psycopg import sql
from sqlalchemy import create_engine, inspect

from reconciler.cli.main import cli
from reconciler.state import open_store

GMAIL = "OutgoingServer/acme/gmail-notifications"
SEND = ["--module", "request", "--namespace", "acme", "--to", "a@desk.example",
        "--subject", "hi", "--text", "x"]
# Every command that takes --store, except apply, with arguments that would work
# on a real store: each must stop at the missing store.
COMMANDS = [
    ["plan", str(EXAMPLES)],
    ["drift", str(EXAMPLES)],
    ["history"],
    ["history", GMAIL],
    ["history", "show", "1"],
    ["history", "verify"],
    ["history", "export"],
    ["history", "as-of", "1"],
    ["live", "get", GMAIL],
    ["live", "set", GMAIL, "port=25"],
    ["lock", "status"],
    ["lock", "force-unlock", "some-lock-id"],
    ["force-unlock", "some-lock-id"],
    ["incoming", "status"],
    ["incoming", "retry", "support"],
    ["auth", "status"],
    ["route", "--module", "request", "--namespace", "acme"],
    ["send", *SEND],
    ["test-connection", "gmail-notifications", "--to", "a@desk.example"],
    ["status"],
    ["audit"],
]
IDS = [" ".join(c[:2]).replace(str(EXAMPLES), "DIR") for c in COMMANDS]
FIX = "--store / RECONCILE_STORE"


def run(*args: str | Path, env: dict[str, str | None] | None = None) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args], env=env)


def reconcile(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "reconciler", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=300, check=False)


def assert_refused(output: str, *fragments: str) -> None:
    assert "Traceback" not in output, output
    assert output.count("Error:") == 1, output
    for fragment in fragments:
        assert fragment in output, output


@pytest.mark.parametrize("command", COMMANDS, ids=IDS)
def test_every_command_but_apply_refuses_a_mistyped_sqlite_path(
        command: list[str], tmp_path: Path) -> None:
    typo = tmp_path / "nonexistent-dir" / "x" / "state.db"
    result = run(*command, "--store", typo)
    assert result.exit_code == 1, result.output
    assert_refused(result.output, f"no state store at {typo}", "`reconcile apply` creates it",
                   FIX)
    assert not (tmp_path / "nonexistent-dir").exists()


@pytest.mark.parametrize("command", COMMANDS, ids=IDS)
def test_a_typo_in_reconcile_store_is_refused_too(command: list[str], tmp_path: Path) -> None:
    typo = tmp_path / "stat.db"  # the folder exists; the file is misspelt
    result = run(*command, env={"RECONCILE_STORE": str(typo)})
    assert result.exit_code == 1, result.output
    assert_refused(result.output, f"no state store at {typo}", FIX)
    assert list(tmp_path.iterdir()) == []


def test_plan_without_a_store_creates_no_default_folder(tmp_path: Path) -> None:
    done = reconcile("plan", EXAMPLES, cwd=tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert_refused(done.stderr, "no state store at .reconcile/state.db", FIX)
    assert "Plan:" not in done.stdout  # not "everything would be created"
    assert list(tmp_path.iterdir()) == []


def test_the_daemon_refuses_a_missing_store(tmp_path: Path) -> None:
    typo = tmp_path / "nonexistent-dir" / "state.db"
    done = reconcile("daemon", "--store", typo, "--listen", f"127.0.0.1:{free_port()}")
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert f"no state store at {typo}" in done.stderr and FIX in done.stderr
    assert not typo.parent.exists()


def test_apply_creates_a_store_only_in_an_existing_folder(tmp_path: Path) -> None:
    typo = tmp_path / "nonexistent-dir" / "x" / "state.db"
    result = run("apply", EXAMPLES, "--yes", "--store", typo)
    assert result.exit_code == 1, result.output
    assert_refused(result.output, f"no state store at {typo}",
                   f"{typo.parent} does not exist", FIX)
    assert not (tmp_path / "nonexistent-dir").exists()

    here = tmp_path / "state.db"
    result = run("apply", EXAMPLES, "--yes", "--store", here)
    assert result.exit_code == 0, result.output
    assert f"Applied revision 1: {example_count()} created" in result.output
    assert run("plan", EXAMPLES, "--store", here).exit_code == 0  # now it exists: no changes


def test_apply_creates_the_default_store_folder(tmp_path: Path) -> None:
    done = reconcile("apply", EXAMPLES, "--yes", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    with open_store(tmp_path / ".reconcile" / "state.db", create=False) as store:
        assert store.head() == 1
    assert reconcile("plan", EXAMPLES, cwd=tmp_path).returncode == 0


# -- PostgreSQL ---------------------------------------------------------------------------------


@pytest.fixture
def empty_database(postgres_server: PostgresServer) -> Iterator[str]:
    """A database that exists but that reconcile never initialised."""
    name = f"empty_{uuid.uuid4().hex[:12]}"
    with postgres_server.connect() as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield postgres_server.url(name)
    finally:
        with postgres_server.connect() as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(name)))


def tables(url: str) -> list[str]:
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.connect() as conn:
            return inspect(conn).get_table_names()
    finally:
        engine.dispose()


@pytest.mark.parametrize("command", [["plan", str(EXAMPLES)], ["history"], ["status"],
                                     ["send", *SEND]], ids=["plan", "history", "status", "send"])
def test_a_database_that_does_not_exist_is_named_without_its_password(
        command: list[str], postgres_server: PostgresServer) -> None:
    name = f"no_such_db_{uuid.uuid4().hex[:8]}"
    url = f"postgresql://{postgres_server.user}:pw-5ecret@127.0.0.1:5432/{name}"
    result = run(*command, "--store", url)
    assert result.exit_code == 1, result.output
    assert_refused(result.output, "no state store at", f"127.0.0.1:5432/{name}",
                   "does not exist", FIX)
    assert "pw-5ecret" not in result.output


@pytest.mark.parametrize("command", COMMANDS, ids=IDS)
def test_an_empty_database_is_not_initialised_by_other_commands(
        command: list[str], empty_database: str) -> None:
    result = run(*command, "--store", empty_database)
    assert result.exit_code == 1, result.output
    assert_refused(result.output, f"the store {empty_database} is not initialised",
                   "`reconcile apply` initialises it", FIX)
    assert tables(empty_database) == []


def test_the_daemon_refuses_an_empty_database(empty_database: str) -> None:
    done = reconcile("daemon", "--store", empty_database,
                     "--listen", f"127.0.0.1:{free_port()}")
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr and "is not initialised" in done.stderr
    assert tables(empty_database) == []


def test_apply_initialises_an_empty_database(empty_database: str) -> None:
    result = run("apply", EXAMPLES, "--yes", "--store", empty_database)
    assert result.exit_code == 0, result.output
    assert "alembic_version" in tables(empty_database)
    assert run("plan", EXAMPLES, "--store", empty_database).exit_code == 0
