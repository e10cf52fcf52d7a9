"""`reconcile schema`: write the generated JSON Schemas, or check that they are current (C3)."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner, Result
from config.helpers import SCHEMAS

from reconciler.cli.main import cli
from reconciler.policy.schema import render_all


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, ["schema", *args], catch_exceptions=False)


def test_committed_schemas_are_current() -> None:
    result = invoke("--out", str(SCHEMAS), "--check")
    assert result.exit_code == 0, (
        result.output + "\nrun `reconcile schema --out schemas/` and commit the result")
    assert result.output == ""


def test_write_then_up_to_date(tmp_path: Path) -> None:
    out = tmp_path / "schemas"
    first = invoke("--out", str(out))
    assert first.exit_code == 0
    assert first.output == f"{len(render_all())} schema file(s) written to {out}\n"
    assert sorted(p.name for p in out.iterdir()) == sorted(render_all())
    for path in out.iterdir():
        json.loads(path.read_text(encoding="utf-8"))
    again = invoke("--out", str(out))
    assert again.output == f"schemas in {out} are up to date\n"
    assert invoke("--out", str(out), "--check").exit_code == 0


def test_check_reports_drift(tmp_path: Path) -> None:
    out = tmp_path / "schemas"
    invoke("--out", str(out))
    (out / "mailsettings.json").write_text("{}\n", encoding="utf-8")
    result = invoke("--out", str(out), "--check")
    assert result.exit_code == 1
    assert result.output == (
        f"{out / 'mailsettings.json'}: out of date; run `reconcile schema --out {out}`\n")
