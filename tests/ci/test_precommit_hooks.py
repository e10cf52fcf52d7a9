"""`.pre-commit-hooks.yaml` (SPEC X2): the hook parses and runs a command that exists."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
import tomllib

import yaml

from reconciler.cli.main import cli

from .kit import REPO


def _hooks() -> list[dict[str, object]]:
    data = yaml.safe_load((REPO / ".pre-commit-hooks.yaml").read_text())
    assert isinstance(data, list)
    return data


def test_the_validate_hook_is_defined() -> None:
    [hook] = [h for h in _hooks() if h["id"] == "reconcile-validate"]
    assert hook["language"] == "python"
    assert hook["pass_filenames"] is False
    assert hook["entry"] == "reconcile validate"
    pattern = re.compile(str(hook["files"]))
    assert pattern.search("acme/outgoing-servers.yaml") and pattern.search("a/b.yml")
    assert not pattern.search("README.md") and not pattern.search("x.yaml.bak")


def test_the_entry_names_an_installed_script_and_an_existing_command() -> None:
    for hook in _hooks():
        program, subcommand, *_ = shlex.split(str(hook["entry"]))
        scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
        assert program in scripts, f"{program} is not a console script of this package"
        assert subcommand in cli.list_commands(None)  # type: ignore[arg-type]


def test_the_hook_command_runs_like_pre_commit_would() -> None:
    # pre-commit runs the entry in the repository root with no file names.
    exe = shutil.which("reconcile")
    command = [exe] if exe else [sys.executable, "-c",
                                 "from reconciler.cli.main import main; main()"]
    ok = subprocess.run([*command, "validate"], cwd=REPO / "examples" / "config",
                        capture_output=True, text=True, check=False)
    assert ok.returncode == 0, ok.stdout + ok.stderr
