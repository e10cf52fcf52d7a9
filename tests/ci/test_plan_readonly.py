"""plan.yml plans through a read-only PostgreSQL role (SPEC S4, docs/ci.md): the role
made by the SQL in docs/ci.md is enough for the Plan step, which writes nothing
(no migration, no lock row), and it cannot apply."""

from __future__ import annotations

import re
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from click.testing import CliRunner
from peers.postgres import PostgresServer
from psycopg import sql

from reconciler.cli.main import cli

from .kit import REPO, run_step, step, workflow

EXAMPLES = REPO / "examples" / "config"
DOC = REPO / "docs" / "ci.md"


def documented_sql() -> list[str]:
    """The statements of the read-only role, exactly as docs/ci.md gives them."""
    [block] = re.findall(r"```sql\n(.*?)```", DOC.read_text(), re.S)
    text = "\n".join(line.strip() for line in block.splitlines())
    return [s.strip() for s in text.split(";") if s.strip()]


@pytest.fixture
def readonly_url(postgres_server: PostgresServer, postgres_database: str,
                 postgres_url: str) -> Iterator[str]:
    """The test's store, with the examples applied, reached through a role made by
    the documented SQL (which grants on tables, so they must exist)."""
    applied = CliRunner().invoke(cli, ["apply", str(EXAMPLES), "--store", postgres_url,
                                       "--yes"])
    assert applied.exit_code == 0, applied.output
    schema = parse_qs(urlsplit(postgres_url).query)["options"][0].split("=", 1)[1]
    role = f"plan_{uuid.uuid4().hex[:12]}"
    admin = PostgresServer(postgres_server.user, postgres_database)
    try:
        with admin.connect() as conn:
            conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
            for statement in documented_sql():
                statement = (statement.replace("reconcile_plan", role)
                             .replace("DATABASE reconcile", f'DATABASE "{postgres_database}"')
                             .replace("SCHEMA public", f'SCHEMA "{schema}"'))
                conn.execute(statement.encode())
        yield (f"postgresql://{role}:change-me@127.0.0.1:5432/{postgres_database}"
               f"?options=-csearch_path%3D{schema}")
    finally:
        # Roles belong to the whole server: never leave one behind, even after a
        # failed statement above (IF EXISTS then).
        with admin.connect() as conn:
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s",
                                  (role,)).fetchone()
            if exists:
                conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
                conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def _store_rows(url: str) -> tuple[int, int]:
    from sqlalchemy import create_engine, text

    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.connect() as conn:
            head = conn.execute(text("SELECT head FROM meta")).scalar_one()
            locks = conn.execute(text("SELECT count(*) FROM locks")).scalar_one()
    finally:
        engine.dispose()
    return int(head), int(locks)


def test_the_plan_step_works_through_the_read_only_role_and_writes_nothing(
    postgres_url: str, readonly_url: str, tmp_path: Path
) -> None:
    before = _store_rows(postgres_url)
    config = tmp_path / "config"
    shutil.copytree(EXAMPLES, config)
    servers = config / "acme" / "outgoing-servers.yaml"
    servers.write_text(servers.read_text().replace("port: 587", "port: 2587", 1))

    code, outputs = run_step(step(workflow("plan.yml"), "Plan")["run"], tmp_path,
                             {"CONFIG_DIR": str(config), "RECONCILE_STORE": readonly_url})
    assert code == 0 and outputs["exit_code"] == "2", outputs
    plan_md = (tmp_path / "work" / "plan.md").read_text()
    assert "1 to update" in plan_md and "2587" in plan_md, plan_md
    assert "empty store" not in plan_md
    assert _store_rows(postgres_url) == before

    # The credential the PR's code holds cannot change the live store.
    refused = CliRunner().invoke(cli, ["apply", str(config), "--store", readonly_url,
                                       "--yes"])
    assert refused.exit_code == 1, refused.output
    assert "Traceback" not in refused.output
    assert _store_rows(postgres_url) == before
