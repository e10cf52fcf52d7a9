"""plan.model: the saved plan format, its digest, and where git information comes from."""

from __future__ import annotations

import json
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

from reconciler.plan.diff import diff
from reconciler.plan.model import GitInfo, Plan, PlanFileError, git_info, load, save

from .kit import REPO, desired, live, res

ENC = "enc:v1:gAAAAABrAfQt9WMlUeDSY6613U1fXhMgDz2QAh1PkNlFbvg2DdlLyaDtm9F5FO70bREM3dGi=="


def sample_plan() -> Plan:
    kept = res("kept", port=25)
    old, new = res("srv", port=25, labels={"env": "prod"}), res("srv", port=587)
    created = res("new", kind="RecipientFilter", type="allow", domains=["a.example"],
                  password={"secretRef": ENC})
    gone = res("gone", ns="other")
    d, lv = desired(kept, new, created), live(kept, old, gone, revision=7)
    result = diff(d, lv, derived={new.key: {"spec.port"}}, prune=True)
    return Plan.build(result, d, lv, prune=True, git=GitInfo("abc123", "feature", None),
                      source="cfg", created_at=datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC))


def test_build_records_where_the_plan_stands() -> None:
    plan = sample_plan()
    assert plan.base_revision == 7 and plan.lineage == "lineage-1" and plan.live_count == 3
    assert [c.action.value for c in plan.changes] == ["update", "delete", "create"]
    assert len(plan.digest) == 64


def test_save_load_round_trip(tmp_path: Path) -> None:
    plan = sample_plan()
    save(plan, tmp_path / "plan.json")
    loaded = load(tmp_path / "plan.json")
    assert loaded == plan
    assert loaded.digest == plan.digest
    assert loaded.changes == plan.changes  # full resource versions, fields and derived marks
    assert loaded.sealed().digest == plan.digest
    data = json.loads((tmp_path / "plan.json").read_text())
    assert data["format"] == "reconcile-plan" and data["version"] == 1


def test_digest_covers_content() -> None:
    plan = sample_plan()
    other = Plan.build(diff(desired(res("x")), live()), desired(res("x")), live(),
                       prune=False, created_at=plan.created_at)
    assert other.digest != plan.digest


def test_saved_plan_keeps_references_not_values(tmp_path: Path) -> None:
    save(sample_plan(), tmp_path / "plan.json")
    text = (tmp_path / "plan.json").read_text()
    # The encrypted reference is kept as written (apply must store it), nothing else.
    assert '"secretRef": "' + ENC + '"' in text


@pytest.mark.parametrize("edit", [
    lambda d: d["changes"][0]["after"]["spec"].update(port=2525),
    lambda d: d.update(baseRevision=8),
    lambda d: d["changes"].pop(),
    lambda d: d["changes"][0]["fields"][0].update(derived="yes"),
])
def test_tampered_plan_is_refused(tmp_path: Path, edit: object) -> None:
    path = tmp_path / "plan.json"
    save(sample_plan(), path)
    data = json.loads(path.read_text())
    edit(data)  # type: ignore[operator]
    path.write_text(json.dumps(data))
    with pytest.raises(PlanFileError, match="modified after it was saved"):
        load(path)


@pytest.mark.parametrize("content", [
    "apiVersion: reconciler.dev/v1\nkind: OutgoingServer\n",
    "not json at all",
    "[1, 2, 3]",
    '{"format": "something-else"}',
    "",
])
def test_non_plan_file_is_refused(tmp_path: Path, content: str) -> None:
    path = tmp_path / "plan.json"
    path.write_text(content)
    with pytest.raises(PlanFileError, match="is not a saved plan"):
        load(path)


def test_other_format_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "plan.json"
    path.write_text(json.dumps({"format": "reconcile-plan", "version": 99}))
    with pytest.raises(PlanFileError, match="format version 99"):
        load(path)


def test_missing_plan_file(tmp_path: Path) -> None:
    with pytest.raises(PlanFileError, match="cannot read"):
        load(tmp_path / "nope.json")


def test_git_info_from_a_github_pull_request(tmp_path: Path) -> None:
    env = {"GITHUB_SHA": "f" * 40, "GITHUB_REF": "refs/pull/42/merge",
           "GITHUB_REF_NAME": "42/merge", "GITHUB_HEAD_REF": "add-gmail"}
    assert git_info(tmp_path, env) == GitInfo("f" * 40, "add-gmail", "42")


def test_git_info_from_a_github_push(tmp_path: Path) -> None:
    env = {"GITHUB_SHA": "e" * 40, "GITHUB_REF": "refs/heads/main", "GITHUB_REF_NAME": "main",
           "GITHUB_HEAD_REF": ""}
    assert git_info(tmp_path, env) == GitInfo("e" * 40, "main", None)


def test_git_info_outside_a_checkout_is_empty(tmp_path: Path) -> None:
    assert git_info(tmp_path, {}) == GitInfo()


@pytest.mark.skipif(shutil.which("git") is None or not (REPO / ".git").exists(),
                    reason="needs the project's git checkout")
def test_git_info_from_the_checkout() -> None:
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True,
                          text=True, check=True).stdout.strip()
    assert git_info(REPO / "examples" / "config", {}).commit == head
