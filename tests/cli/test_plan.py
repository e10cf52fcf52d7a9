"""`reconcile plan`: exit codes, formats, --prune, --out, and secrets kept out of every output."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from plan.kit import (
    copy_examples,
    edit,
    example_count,
    initialised,
    set_secret_env,
    use_encrypted_secret,
    write_tenants,
)

from reconciler.cli.main import cli
from reconciler.plan.model import load
from reconciler.state import open_store


def run(*args: str | Path, env: dict[str, str] | None = None, input: str | None = None) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args], env=env, input=input)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return copy_examples(tmp_path)


@pytest.fixture
def db(tmp_path: Path) -> str:
    (tmp_path / "state").mkdir()
    return initialised(str(tmp_path / "state" / "state.db"))


def applied(config: Path, db: str) -> None:
    result = run("apply", config, "--store", db, "--yes", "--actor", "setup")
    assert result.exit_code == 0, result.output


def test_exit_2_when_there_are_changes_then_0(config: Path, db: str) -> None:
    result = run("plan", config, "--store", db)
    assert result.exit_code == 2, result.output
    assert "+ create OutgoingServer acme/gmail-notifications" in result.stdout
    # What the author wrote is shown; defaults and derived values only on request.
    block = result.stdout.split("acme/gmail-notifications\n")[1].split("\n+ ")[0]
    assert '    spec.email: "helpdesk@acme.example"' in block
    assert "spec.port" not in block and "spec.debug" not in block
    assert "default or derived values of new resources not shown; --show-derived lists them" \
        in result.stdout
    full = run("plan", config, "--store", db, "--show-derived")
    assert "    spec.port: 587 (derived)" in full.stdout
    assert "    spec.debug: false (derived)" in full.stdout
    assert "not shown" not in full.stdout
    n = example_count()
    assert f"Plan: {n} to create, 0 to update, 0 to delete (base revision 0)." in result.stdout
    applied(config, db)
    result = run("plan", config, "--store", db)
    assert result.exit_code == 0, result.output
    assert "No changes." in result.stdout


def test_update_shows_field_changes(config: Path, db: str) -> None:
    applied(config, db)
    servers = config / "acme" / "outgoing-servers.yaml"
    edit(servers, "security: none                # port 25 is derived", "security: tls")
    edit(servers, "labels: {env: prod}", "labels: {env: staging}")
    result = run("plan", config, "--store", db)
    assert result.exit_code == 2, result.output
    out = result.stdout
    assert "~ update OutgoingServer acme/dev-relay\n" in out
    assert "    spec.port: 25 → 465 (derived)\n" in out
    assert '    spec.security: "none" → "tls"\n' in out
    assert "~ update OutgoingServer acme/o365-hr\n" in out
    assert '    metadata.labels.env: "prod" → "staging"\n' in out
    assert "Plan: 0 to create, 2 to update, 0 to delete (base revision 1)." in out


def test_exit_1_on_invalid_config_with_diagnostics(config: Path, tmp_path: Path) -> None:
    edit(config / "acme" / "outgoing-servers.yaml", "port: 587", "port: 70000")
    db = tmp_path / "state.db"
    result = run("plan", config, "--store", db)
    assert result.exit_code == 1
    assert "spec.port" in result.stdout and "error" in result.stdout
    assert "Plan:" not in result.output
    assert "no state store" not in result.output  # the config's errors come first
    assert not os.path.exists(db)  # nothing to plan, so no store was created


def test_invalid_config_in_markdown_is_a_comment_saying_so(config: Path, db: str) -> None:
    edit(config / "acme" / "outgoing-servers.yaml", "port: 587", "port: 70000")
    result = run("plan", config, "--store", db, "--format", "markdown")
    assert result.exit_code == 1
    assert result.stdout.startswith("<!-- reconcile-plan -->")
    assert "invalid" in result.stdout and "spec.port" in result.stdout


def test_invalid_config_in_json_is_the_validation_report(config: Path, db: str) -> None:
    edit(config / "acme" / "outgoing-servers.yaml", "port: 587", "port: 70000")
    result = run("plan", config, "--store", db, "--format", "json")
    assert result.exit_code == 1
    assert json.loads(result.stdout)["valid"] is False


@pytest.mark.parametrize("args", [["missing-dir"], [".", "--format", "xml"]])
def test_usage_errors_exit_1_not_2(args: list[str], db: str) -> None:
    result = run("plan", *args, "--store", db)
    assert result.exit_code == 1, result.output


def test_exit_1_on_an_unusable_store(config: Path, tmp_path: Path) -> None:
    result = run("plan", config, "--store", "mysql://nowhere/db")
    assert result.exit_code == 1
    assert "unsupported store URL scheme" in result.output
    assert "Traceback" not in result.output


def test_json_output_is_one_document_with_warnings_on_stderr(config: Path, db: str) -> None:
    # Port 25 with STARTTLS is a warning, not an error.
    edit(config / "acme" / "outgoing-servers.yaml", "port: 587", "port: 25")
    result = run("plan", config, "--store", db, "--format", "json")
    assert result.exit_code == 2
    data = json.loads(result.stdout)
    moves = len(data["credentialMoves"])
    assert moves > 0  # an empty store: every credential is new (bound by the first apply)
    assert data["summary"] == {"create": example_count(), "update": 0, "delete": 0,
                               "unmanaged": 0, "credentialMoves": moves}
    assert "warning" in result.stderr and "spec.port" in result.stderr


def test_markdown_output(config: Path, db: str) -> None:
    result = run("plan", config, "--store", db, "--format", "markdown")
    assert result.exit_code == 2
    assert result.stdout.startswith("<!-- reconcile-plan -->")
    servers = example_count("OutgoingServer")
    assert f"| OutgoingServer | {servers} |  |  |" in result.stdout
    assert "warning" not in result.stdout


def test_unmanaged_are_kept_without_prune(db: str, tmp_path: Path) -> None:
    config = write_tenants(tmp_path / "tenants", {"north": 3, "south": 1})
    applied(config, db)
    write_tenants(config, {"north": 3})
    result = run("plan", config, "--store", db)
    assert result.exit_code == 0, result.output
    assert "Not in the configuration (kept, not deleted):" in result.stdout
    assert "    OutgoingServer south/primary\n    RecipientFilter south/filter-0\n" in (
        result.stdout)
    assert "2 live resources not in the configuration are kept; plan with --prune" in (
        result.stdout)
    assert "- delete" not in result.stdout

    result = run("apply", config, "--store", db, "--yes")
    assert result.exit_code == 0
    assert "no revision was written" in result.stdout
    with open_store(db) as store:
        assert store.head() == 1 and len(store.snapshot()) == 6

    result = run("plan", config, "--store", db, "--prune")
    assert result.exit_code == 2
    assert "- delete OutgoingServer south/primary" in result.stdout
    assert "- delete RecipientFilter south/filter-0" in result.stdout
    assert "Plan: 0 to create, 0 to update, 2 to delete (base revision 1)." in result.stdout
    result = run("apply", config, "--store", db, "--yes", "--prune")
    assert result.exit_code == 0, result.output
    with open_store(db) as store:
        assert len(store.snapshot()) == 4


def test_store_from_environment(config: Path, db: str) -> None:
    assert run("plan", config, env={"RECONCILE_STORE": db}).exit_code == 2
    assert run("apply", config, "--yes", env={"RECONCILE_STORE": db}).exit_code == 0
    with open_store(db) as store:
        assert store.head() == 1
    assert run("plan", config, env={"RECONCILE_STORE": db}).exit_code == 0


def test_out_saves_the_plan(config: Path, db: str, tmp_path: Path) -> None:
    result = run("plan", config, "--store", db, "--out", tmp_path / "plan.json")
    assert result.exit_code == 2
    assert "reconcile apply" in result.stderr
    plan = load(tmp_path / "plan.json")
    assert len(plan.changes) == example_count() and plan.base_revision == 0


def test_secrets_never_appear_in_any_output(
    config: Path, db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    values = set_secret_env(monkeypatch)
    ref = use_encrypted_secret(config)
    ciphertext = ref.removeprefix("enc:v1:")
    outputs = []
    for fmt in ("text", "markdown", "json"):
        result = run("plan", config, "--store", db, "--format", fmt,
                     "--out", tmp_path / f"plan-{fmt}.json")
        assert result.exit_code == 2, result.output
        assert "enc:v1:***" in result.stdout
        outputs.append(result.output)
    applied(config, db)
    # An update of every reference: old and new sides are both shown, both redacted.
    for path in config.rglob("*.yaml"):
        path.write_text(path.read_text().replace("secretRef: env:", "secretRef: env:NEW_"))
    edit(config / "acme" / "outgoing-servers.yaml", ref, ref[:-10] + "AAAAAAAA==")
    for fmt in ("text", "markdown", "json"):
        result = run("plan", config, "--store", db, "--format", fmt,
                     "--out", tmp_path / f"update-{fmt}.json")
        assert result.exit_code == 2, result.output
        outputs.append(result.output)
    for out in outputs:
        assert ciphertext not in out and ciphertext[:24] not in out
        for value in values:
            assert value not in out
    for saved in tmp_path.glob("*.json"):
        text = saved.read_text()
        for value in values:
            assert value not in text


def test_exit_codes_through_the_installed_command(config: Path, db: str) -> None:
    exe = shutil.which("reconcile")
    command = [exe] if exe else [sys.executable, "-c",
                                 "from reconciler.cli.main import main; main()"]
    proc = subprocess.run([*command, "plan", str(config), "--store", db], capture_output=True,
                          text=True, check=False)
    assert proc.returncode == 2, proc.stderr
    edit(config / "acme" / "outgoing-servers.yaml", "port: 587", "port: 70000")
    proc = subprocess.run([*command, "plan", str(config), "--store", db], capture_output=True,
                          text=True, check=False)
    assert proc.returncode == 1
