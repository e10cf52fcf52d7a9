"""Validated config + live state -> Plan: the one path `plan` and `apply DIR` share."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from reconciler.config.desired import DesiredState, ResourceKey
from reconciler.plan.diff import diff
from reconciler.plan.model import Plan, git_info
from reconciler.state.base import LiveState


def make_plan(
    root: Path,
    desired: DesiredState,
    live: LiveState,
    *,
    derived: Mapping[ResourceKey, set[str]] | None = None,
    prune: bool = False,
    env: Mapping[str, str] | None = None,
    bound: frozenset[tuple[str, str]] = frozenset(),
) -> Plan:
    """``bound``: the store's credential bindings, to find the plan's credential moves."""
    result = diff(desired, live, derived=derived, prune=prune)
    return Plan.build(result, desired, live, prune=prune, git=git_info(root, env),
                      source=str(root), bound=bound)
