"""Paths and loaders shared by the CI definition tests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

import reconciler

REPO = Path(next(iter(reconciler.__path__))).parent
WORKFLOWS = REPO / ".github" / "workflows"


def workflow(name: str) -> dict[str, Any]:
    data = yaml.safe_load((WORKFLOWS / name).read_text())
    # YAML 1.1 reads the key `on` as the boolean true.
    if True in data:
        data["on"] = data.pop(True)
    return data


def steps(data: dict[str, Any]) -> list[dict[str, Any]]:
    return [step for job in data["jobs"].values() for step in job["steps"]]


def step(data: dict[str, Any], name: str) -> dict[str, Any]:
    found = [s for s in steps(data) if s.get("name") == name]
    assert len(found) == 1, f"no single step named {name!r}"
    return found[0]


def job(data: dict[str, Any], name: str) -> dict[str, Any]:
    job: dict[str, Any] = data["jobs"][name]
    return job


def _shim(tmp_path: Path) -> Path:
    """A `reconcile` on PATH that is this interpreter's reconciler."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    exe = bin_dir / "reconcile"
    exe.write_text(f'#!/bin/sh\nexec "{sys.executable}" -c '
                   '"from reconciler.cli.main import main; main()" "$@"\n')
    exe.chmod(0o755)
    return bin_dir


def read_outputs(text: str) -> dict[str, str]:
    """A $GITHUB_OUTPUT file: `name=value` lines and `name<<DELIMITER` blocks."""
    outputs: dict[str, str] = {}
    lines = iter(text.splitlines())
    for line in lines:
        name, sep, value = line.partition("<<")
        if sep and "=" not in name:
            block = []
            for inner in lines:
                if inner == value:
                    break
                block.append(inner)
            outputs[name] = "\n".join(block)
        elif "=" in line:
            key, _, value = line.partition("=")
            outputs[key] = value
    return outputs


def run_step(run: str, tmp_path: Path, env: dict[str, str]) -> tuple[int, dict[str, str]]:
    """Run a step's script the way a GitHub runner does (bash -e) and read its outputs."""
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    script = work / "step.sh"
    script.write_text(run)
    out, summary = work / "output", work / "summary"
    out.write_text("")
    summary.write_text("")
    base = {"PATH": f"{_shim(tmp_path)}:/usr/bin:/bin", "HOME": str(tmp_path),
            "GITHUB_OUTPUT": str(out), "GITHUB_STEP_SUMMARY": str(summary)}
    proc = subprocess.run(["bash", "-e", str(script)], cwd=work, env={**base, **env},
                          capture_output=True, text=True, timeout=300, check=False)
    return proc.returncode, read_outputs(out.read_text())
