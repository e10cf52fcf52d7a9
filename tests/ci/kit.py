"""Paths and loaders shared by the CI definition tests."""

from __future__ import annotations

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
