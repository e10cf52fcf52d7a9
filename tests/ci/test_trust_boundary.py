"""The CI trust boundary (SPEC S4, docs/ci.md): jobs that run pull-request code never
hold a writable store credential or a token that can write; apply runs only main,
through a protected environment; actions pinned by commit SHA, checkouts keep no
credentials, every job has the least permissions."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from .kit import WORKFLOWS, job, run_step, step, workflow

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "config"
NAMES = sorted(p.name for p in WORKFLOWS.glob("*.yml"))
PINNED = re.compile(r"^[\w.-]+/[\w.-]+(/[\w./-]+)?@[0-9a-f]{40}$")


def _jobs(name: str) -> dict[str, dict[str, Any]]:
    jobs: dict[str, dict[str, Any]] = workflow(name)["jobs"]
    return jobs


def _runs_checked_out_code(spec: dict[str, Any]) -> bool:
    """A job that checks the repository out and runs anything runs the branch's code."""
    steps = spec.get("steps", [])
    return any(str(s.get("uses", "")).startswith("actions/checkout@") for s in steps) and \
        any("run" in s for s in steps)


def _triggers(name: str) -> set[str]:
    on = workflow(name)["on"]
    return {on} if isinstance(on, str) else set(on)


def test_no_workflow_runs_pull_request_code_with_the_base_repository_s_rights() -> None:
    # pull_request_target and workflow_run run with the base repository's secrets and
    # a writable token, which is exactly what a pull request must not reach.
    for name in NAMES:
        assert not _triggers(name) & {"pull_request_target", "workflow_run"}, name


@pytest.mark.parametrize("name", [n for n in NAMES if "pull_request" in _triggers(n)])
def test_pull_request_jobs_never_see_the_writable_store_credential(name: str) -> None:
    text = (WORKFLOWS / name).read_text()
    assert "secrets.RECONCILE_STORE_URL" not in text
    assert "secrets.*" not in text and "toJSON(secrets)" not in text.replace(" ", "")


def test_plan_reads_the_live_store_through_the_read_only_credential() -> None:
    plan = step(workflow("plan.yml"), "Plan")
    assert plan["env"]["RECONCILE_STORE"] == "${{ secrets.RECONCILE_STORE_READONLY_URL }}"


def test_the_job_that_may_write_the_pr_comment_runs_no_pull_request_code() -> None:
    plan = workflow("plan.yml")
    comment = job(plan, "comment")
    assert comment["needs"] == "plan"
    for s in comment["steps"]:
        assert "run" not in s, s
        assert str(s["uses"]).startswith("actions/github-script@"), s
        # The plan text (written by PR code) is data in the environment, not script.
        assert "${{" not in s["with"]["script"]


@pytest.mark.parametrize("name", NAMES)
def test_every_job_has_the_least_permissions(name: str) -> None:
    data = workflow(name)
    top = data.get("permissions")
    assert top in ({}, {"contents": "read"}), f"{name}: workflow permissions {top!r}"
    for job_name, spec in data["jobs"].items():
        granted = spec.get("permissions", top)
        assert isinstance(granted, dict), f"{name}/{job_name}: permissions {granted!r}"
        writes = {scope for scope, level in granted.items() if level == "write"}
        if _runs_checked_out_code(spec):
            assert not writes, f"{name}/{job_name} runs repository code with {writes}"
        assert writes <= {"pull-requests"}, f"{name}/{job_name}: {writes}"


@pytest.mark.parametrize("name", NAMES)
def test_actions_are_pinned_by_commit_sha_with_the_tag_in_a_comment(name: str) -> None:
    lines = (WORKFLOWS / name).read_text().splitlines()
    uses = [line for line in lines if re.match(r"\s*(- )?uses:", line)]
    assert uses, name
    for line in uses:
        ref, _, comment = line.split("uses:", 1)[1].partition("#")
        assert PINNED.match(ref.strip()), f"{name}: {line.strip()} is not pinned to a SHA"
        assert re.fullmatch(r"\s*v\d+(\.\d+)*\s*", comment), f"{name}: {line.strip()}"


@pytest.mark.parametrize("name", NAMES)
def test_checkouts_keep_no_credentials(name: str) -> None:
    for spec in _jobs(name).values():
        for s in spec["steps"]:
            if str(s.get("uses", "")).startswith("actions/checkout@"):
                assert s.get("with", {}).get("persist-credentials") is False, (name, s)


def test_apply_runs_only_main_through_the_protected_environment() -> None:
    data = workflow("apply.yml")
    assert _triggers("apply.yml") == {"push", "workflow_dispatch"}
    assert data["on"]["push"]["branches"] == ["main"]
    apply = job(data, "apply")
    # workflow_dispatch may name any branch: the job itself refuses all but main.
    assert apply["if"] == "github.ref == 'refs/heads/main'"
    assert apply["environment"] == "live-store"
    assert "RECONCILE_STORE_URL" in (WORKFLOWS / "apply.yml").read_text()


def test_the_apply_step_refuses_another_branch(tmp_path: Path) -> None:
    store = tmp_path / "live.db"
    code, _ = run_step(step(workflow("apply.yml"), "Apply")["run"], tmp_path, {
        "CONFIG_DIR": str(EXAMPLES), "RECONCILE_STORE": str(store), "ACTOR": "octocat",
        "COMMIT_MESSAGE": "x", "GITHUB_REF": "refs/heads/feature"})
    assert code == 1
    assert not store.exists()


@pytest.mark.parametrize("name", NAMES)
def test_a_credential_move_is_approved_only_by_a_manual_run_of_apply(name: str) -> None:
    """SPEC S2: no workflow approves a credential move by itself; apply.yml passes only
    what the person starting a manual run typed, through the environment."""
    text = (WORKFLOWS / name).read_text()
    if name != "apply.yml":
        assert "approve-credential-move" not in text
        return
    data = workflow(name)
    apply = step(data, "Apply")
    assert apply["env"]["APPROVE"] == "${{ inputs.approve_credential_move }}"
    assert "--approve-credential-move" not in re.sub(
        r'approvals\+=\(--approve-credential-move "\$move"\)', "", apply["run"])
    # A push carries no inputs: the input exists only for workflow_dispatch.
    triggers = data.get("on") or data.get(True)
    assert set(triggers["workflow_dispatch"]["inputs"]) == {"approve_credential_move"}
    assert triggers["workflow_dispatch"]["inputs"]["approve_credential_move"]["default"] == ""
