"""`reconcile apply`: saved plans applied exactly or refused, confirmation, threshold, lock."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from plan.kit import copy_examples, edit, example_count, initialised, write_tenants

from reconciler.cli import apply as apply_cli
from reconciler.cli.main import cli
from reconciler.plan.model import load
from reconciler.state import open_store


def run(*args: str | Path, input: str | None = None) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args], input=input)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return copy_examples(tmp_path)


@pytest.fixture
def db(store_url: str) -> str:
    """Each test runs against SQLite and PostgreSQL, on an empty store that exists."""
    return initialised(store_url)


def head(db: str) -> int:
    with open_store(db) as store:
        return store.head()


def plan_out(config: Path, db: str, out: Path, *extra: str) -> None:
    result = run("plan", config, "--store", db, "--out", out, *extra)
    assert result.exit_code in (0, 2), result.output


def apply_yes(config: Path, db: str, *extra: str) -> Result:
    result = run("apply", config, "--store", db, "--yes", *extra)
    assert result.exit_code == 0, result.output
    return result


def test_saved_plan_applies_exactly_what_was_shown(config: Path, db: str, tmp_path: Path) -> None:
    plan_file = tmp_path / "plan.json"
    plan_out(config, db, plan_file)
    # The folder changes after the plan was reviewed: apply must not pick that up.
    edit(config / "acme" / "outgoing-servers.yaml", "port: 587", "port: 465")
    result = run("apply", plan_file, "--store", db, "--actor", "dana", "-m", "first rollout")
    assert result.exit_code == 0, result.output
    n = example_count()
    assert f"Applied revision 1: {n} created, 0 updated, 0 deleted." in result.stdout
    # The plan was reviewed when it was saved: applying it says which one, not all of it.
    assert result.stdout.splitlines()[0] == (
        f"Applying the saved plan {plan_file}: Plan: {n} to create, 0 to update, 0 to "
        "delete (base revision 0).")
    assert "+ create" not in result.stdout and len(result.stdout.splitlines()) == 2
    plan = load(plan_file)
    with open_store(db) as store:
        live = store.snapshot()
        rev = store.revision(1)
    assert dict(live.resources) == {c.key: c.after for c in plan.changes}
    hr = next(r for r in live if r.key.name == "o365-hr")
    assert hr.spec["port"] == 587
    assert (rev.meta.actor, rev.meta.message, rev.meta.plan_digest) == (
        "dana", "first rollout", plan.digest)


def test_stale_plan_is_refused_and_the_store_is_unchanged(
    config: Path, db: str, tmp_path: Path
) -> None:
    apply_yes(config, db)
    edit(config / "acme" / "outgoing-servers.yaml", "port: 587", "port: 465")
    plan_out(config, db, tmp_path / "stale.json")
    edit(config / "acme" / "outgoing-servers.yaml", "port: 465", "port: 2525")
    # A new port for the server's credentials is a credential move (S2).
    apply_yes(config, db, "--actor", "erin",
              "--approve-credential-move", "OutgoingServer/acme/o365-hr")
    with open_store(db) as store:
        before = store.snapshot()
    result = run("apply", tmp_path / "stale.json", "--store", db)
    assert result.exit_code == 1
    assert "the live store changed since this plan was made" in result.output
    assert "based on revision 1" in result.output and "now at revision 2" in result.output
    assert "by erin" in result.output and "Re-run `reconcile plan`" in result.output
    assert "Traceback" not in result.output
    with open_store(db) as store:
        assert store.head() == 2 and store.snapshot() == before


def test_plan_for_another_store_is_refused(config: Path, db: str, tmp_path: Path) -> None:
    other = initialised(str(tmp_path / "other.db"))
    plan_out(config, other, tmp_path / "plan.json")
    result = run("apply", tmp_path / "plan.json", "--store", db)
    assert result.exit_code == 1
    assert "this plan was made against another store" in result.output
    assert head(db) == 0


def test_tampered_plan_is_refused(config: Path, db: str, tmp_path: Path) -> None:
    path = tmp_path / "plan.json"
    plan_out(config, db, path)
    data = json.loads(path.read_text())
    data["changes"][0]["after"]["spec"]["host"] = "evil.example"
    path.write_text(json.dumps(data))
    result = run("apply", path, "--store", db)
    assert result.exit_code == 1
    assert "was modified after it was saved" in result.output
    assert head(db) == 0


def test_a_file_that_is_not_a_plan_is_refused(tmp_path: Path) -> None:
    path, db = tmp_path / "notes.txt", tmp_path / "state.db"
    path.write_text("hello")
    result = run("apply", path, "--store", db)
    assert result.exit_code == 1
    assert "is not a saved plan" in result.output
    assert not db.exists()


def test_threshold_refuses_then_force_applies(db: str, tmp_path: Path) -> None:
    config = write_tenants(tmp_path / "tenants", {"north": 9, "south": 9})
    apply_yes(config, db)
    # Dropping one of two tenants deletes 10 of the 20 live resources.
    write_tenants(config, {"north": 9})
    plan_out(config, db, tmp_path / "prune.json", "--prune")
    result = run("apply", tmp_path / "prune.json", "--store", db)
    assert result.exit_code == 1
    assert "would change 10 of the 20 live resources (0 updates, 10 deletes, 50%)" in (
        result.output)
    assert "apply again with --force" in result.output
    assert head(db) == 1
    result = run("apply", tmp_path / "prune.json", "--store", db, "--force")
    assert result.exit_code == 0, result.output
    assert "Applied revision 2: 0 created, 0 updated, 10 deleted." in result.stdout


def test_threshold_counts_updates_and_applies_dirs_too(db: str, tmp_path: Path) -> None:
    config = write_tenants(tmp_path / "tenants", {"north": 11})
    apply_yes(config, db)
    write_tenants(config, {"north": 11}, domain="elsewhere.example")
    result = run("apply", config, "--store", db, "--yes")
    assert result.exit_code == 1
    assert "would change 11 of the 12 live resources (11 updates, 0 deletes" in result.output
    assert head(db) == 1
    assert run("apply", config, "--store", db, "--yes", "--force").exit_code == 0
    assert head(db) == 2


def test_dir_without_yes_and_no_terminal_is_refused(config: Path, db: str) -> None:
    result = run("apply", config, "--store", db)
    assert result.exit_code == 1
    assert "+ create OutgoingServer acme/gmail-notifications" in result.stdout
    assert "stdin is not a terminal" in result.output and "--yes" in result.output
    assert head(db) == 0


@pytest.mark.parametrize(("answer", "revisions"), [("y\n", 1), ("n\n", 0)])
def test_dir_on_a_terminal_asks(
    config: Path, db: str, monkeypatch: pytest.MonkeyPatch, answer: str, revisions: int
) -> None:
    monkeypatch.setattr(apply_cli, "stdin_is_terminal", lambda: True)
    result = run("apply", config, "--store", db, input=answer)
    assert "Apply these changes to" in result.output
    assert head(db) == revisions
    assert result.exit_code == (0 if revisions else 1)


class AnswerAfter(io.BytesIO):
    """What a person types at the prompt, after ``meanwhile`` ran while they read."""

    def __init__(self, answer: str, meanwhile: Callable[[], None]) -> None:
        super().__init__(answer.encode())
        self._meanwhile: Callable[[], None] | None = meanwhile

    def _first(self, size: int | None) -> None:
        if size != 0 and self._meanwhile is not None:  # read(0) only probes the stream type
            meanwhile, self._meanwhile = self._meanwhile, None
            meanwhile()

    def read(self, size: int | None = -1) -> bytes:
        self._first(size)
        return super().read(size)

    def read1(self, size: int = -1) -> bytes:
        self._first(size)
        return super().read1(size)


def test_a_plan_confirmed_at_the_prompt_is_refused_if_the_store_moved_meanwhile(
    config: Path, db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = copy_examples(tmp_path / "other")
    edit(other / "acme" / "outgoing-servers.yaml", "port: 587", "port: 465")
    applied_meanwhile: list[subprocess.CompletedProcess[str]] = []

    def someone_else_applies() -> None:
        # --lock-timeout 0: the prompt must not hold the apply lock while a person reads
        applied_meanwhile.append(subprocess.run(
            [sys.executable, "-m", "reconciler", "apply", str(other), "--store", db, "--yes",
             "--actor", "erin", "--lock-timeout", "0"],
            capture_output=True, text=True, timeout=300, check=False))

    monkeypatch.setattr(apply_cli, "stdin_is_terminal", lambda: True)
    result = CliRunner().invoke(cli, ["apply", str(config), "--store", db],
                                input=AnswerAfter("y\n", someone_else_applies))
    assert "Apply these changes to" in result.output
    assert applied_meanwhile and applied_meanwhile[0].returncode == 0, applied_meanwhile
    assert result.exit_code == 1, result.output
    assert "the live store changed since this plan was made" in result.output
    assert "by erin" in result.output and "Traceback" not in result.output
    with open_store(db) as store:
        assert store.head() == 1 and store.revision(1).meta.actor == "erin"


def test_dir_without_changes_writes_no_revision(config: Path, db: str) -> None:
    apply_yes(config, db)
    result = apply_yes(config, db)
    assert "No changes." in result.stdout and "no revision was written" in result.stdout
    assert head(db) == 1


def test_saved_plan_without_changes_writes_no_revision(
    config: Path, db: str, tmp_path: Path
) -> None:
    apply_yes(config, db)
    plan_out(config, db, tmp_path / "noop.json")
    result = run("apply", tmp_path / "noop.json", "--store", db)
    assert result.exit_code == 0
    assert head(db) == 1


def test_prune_with_a_saved_plan_is_refused(config: Path, db: str, tmp_path: Path) -> None:
    plan_out(config, db, tmp_path / "plan.json")
    result = run("apply", tmp_path / "plan.json", "--store", db, "--prune")
    assert result.exit_code == 1
    assert "--prune only applies when planning" in result.output


def test_lock_held_fails_after_the_timeout_naming_the_holder(
    config: Path, db: str, tmp_path: Path
) -> None:
    plan_out(config, db, tmp_path / "plan.json")
    with open_store(db) as store, store.lock("frank@deploy-box", "apply", timeout=0):
        result = run("apply", tmp_path / "plan.json", "--store", db, "--lock-timeout", "0.2")
    assert result.exit_code == 1
    assert "locked by frank@deploy-box" in result.output
    assert "--lock-timeout" in result.output
    assert head(db) == 0
