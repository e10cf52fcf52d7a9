"""`plan`/`apply` with --target and --namespace: only the scope is planned and applied,
with the same safety checks, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from plan.kit import edit, initialised, write_tenants

from reconciler.cli.main import cli
from reconciler.plan.model import load
from reconciler.state import open_store

POLICY = """apiVersion: reconciler.dev/v1
kind: Policy
metadata: {name: sender-name-required}
spec:
  description: Recipients must see which desk a notification comes from.
  kinds: [OutgoingServer]
  severity: deny
  condition: spec.senderName != "south desk"
  path: spec.senderName
  message: OutgoingServer has the old senderName
"""


def run(*args: str | Path) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture
def db(store_url: str) -> str:
    return initialised(store_url)


def applied(tmp_path: Path, db: str, tenants: dict[str, int]) -> Path:
    config = write_tenants(tmp_path / "tenants", tenants)
    result = run("apply", config, "--store", db, "--yes")
    assert result.exit_code == 0, result.output
    return config


def test_target_plans_and_applies_only_it_and_the_history_says_so(
    db: str, tmp_path: Path
) -> None:
    config = applied(tmp_path, db, {"north": 2, "south": 2})
    write_tenants(config, {"north": 2, "south": 2}, domain="elsewhere.example")
    result = run("plan", config, "--store", db, "--format", "json",
                 "--target", "RecipientFilter/north/filter-0")
    assert result.exit_code == 2, result.output
    shown = json.loads(result.stdout)
    assert [(c["namespace"], c["name"]) for c in shown["changes"]] == [("north", "filter-0")]
    assert shown["scope"]["targets"] == ["RecipientFilter/north/filter-0"]
    assert "the rest of the configuration was not planned" in shown["scope"]["warning"]
    assert "the rest of the configuration was not planned" in result.stderr

    result = run("apply", config, "--store", db, "--yes", "-m", "hotfix",
                 "--target", "RecipientFilter/filter-1", "--namespace", "south")
    assert result.exit_code == 0, result.output
    assert "Applied revision 2: 0 created, 1 updated, 0 deleted." in result.stdout
    assert "Warning: this plan is scoped to RecipientFilter/south/filter-1" in result.stderr
    with open_store(db) as store:
        assert store.revision(2).meta.message == (
            "hotfix [scope: RecipientFilter/south/filter-1]")
    # The rest is still to do.
    result = run("plan", config, "--store", db)
    assert result.exit_code == 2
    assert "0 to create, 3 to update, 0 to delete" in result.stdout


def test_namespace_prunes_only_inside_and_the_threshold_is_over_the_scope(
    db: str, tmp_path: Path
) -> None:
    config = applied(tmp_path, db, {"north": 9, "south": 9, "east": 9})
    write_tenants(config, {"south": 4, "east": 9})  # north gone, 5 of south's 10 too
    result = run("plan", config, "--store", db, "--prune", "--namespace", "east")
    assert result.exit_code == 0, result.output
    assert "No changes" in result.stdout
    # 5 of 30 live resources is under the threshold, 5 of south's 10 is not.
    result = run("apply", config, "--store", db, "--yes", "--prune", "--namespace", "south")
    assert result.exit_code == 1
    assert "would change 5 of the 10 live resources" in result.output
    result = run("apply", config, "--store", db, "--yes", "--prune", "--namespace", "south",
                 "--force")
    assert result.exit_code == 0, result.output
    assert "0 created, 0 updated, 5 deleted." in result.stdout
    with open_store(db) as store:
        assert {k.namespace for k in store.snapshot().resources} == {"north", "south", "east"}


def test_unknown_targets_are_errors_with_a_hint(db: str, tmp_path: Path) -> None:
    config = write_tenants(tmp_path / "tenants", {"north": 1})
    result = run("plan", config, "--store", db, "--target", "RecipientFilter/north/filtr-0")
    assert result.exit_code == 1
    assert "did you mean 'RecipientFilter/north/filter-0'?" in result.output
    result = run("apply", config, "--store", db, "--yes", "--namespace", "nort")
    assert result.exit_code == 1
    assert "--namespace nort has no resources" in result.output
    assert "did you mean 'north'?" in result.output
    assert "Traceback" not in result.output
    result = run("plan", config, "--store", db, "--target", "RecipientFilter/filter-0",
                 "-n", "north", "-n", "south")
    assert result.exit_code == 1 and "at most one --namespace" in result.output


def test_saved_plan_keeps_its_scope(db: str, tmp_path: Path) -> None:
    config = write_tenants(tmp_path / "tenants", {"north": 1, "south": 1})
    plan_file = tmp_path / "plan.json"
    result = run("plan", config, "--store", db, "--namespace", "north", "--out", plan_file,
                 "--format", "markdown")
    assert result.exit_code == 2, result.output
    assert "> [!WARNING]\n> this plan is scoped to namespace north" in result.stdout
    result = run("apply", plan_file, "--store", db, "--namespace", "south")
    assert result.exit_code == 1 and "a saved plan keeps the scope" in result.output
    result = run("apply", plan_file, "--store", db)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"Applying the saved plan {plan_file} (scope: namespace "
                                    "north): Plan: 2 to create")
    assert "not planned" in result.stderr
    assert load(plan_file).scope is not None
    with open_store(db) as store:
        assert {k.namespace for k in store.snapshot().resources} == {"north"}


def test_policies_see_the_whole_config_cached_or_not(
    db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".reconcile").mkdir()  # validate and plan use the cache here
    config = write_tenants(tmp_path / "tenants", {"north": 1, "south": 1})
    (config / "policy.yaml").write_text(POLICY)
    for _ in range(2):  # cold, then warm
        result = run("plan", config, "--store", db, "--namespace", "north")
        assert result.exit_code == 1
        assert "OutgoingServer has the old senderName" in result.output
        assert "south" in result.output
    edit(config / "south.yaml", "senderName: south desk", "senderName: South desk")
    result = run("plan", config, "--store", db, "--namespace", "north")
    assert result.exit_code == 2, result.output
    assert "2 to create" in result.stdout
