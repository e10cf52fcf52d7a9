"""A plan's scope: the resources `--target` and `--namespace` restrict plan and apply to,
like Terraform's ``-target``. Only the diff is scoped: validation and policies always see
the whole configuration, so targeting cannot dodge a policy.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from reconciler.config.desired import ResourceKey
from reconciler.config.diagnostics import did_you_mean
from reconciler.state.base import StoreError


class UnknownTarget(StoreError):
    """A target or namespace names nothing in the configuration or the store."""


@dataclass(frozen=True, slots=True)
class Scope:
    targets: tuple[ResourceKey, ...] = ()
    namespaces: tuple[str, ...] = ()

    def __contains__(self, key: object) -> bool:
        return isinstance(key, ResourceKey) and (
            key in self.targets or key.namespace in self.namespaces)

    def describe(self) -> str:
        return ", ".join([*map(str, self.targets), *(f"namespace {n}" for n in self.namespaces)])

    def warning(self) -> str:
        return (f"this plan is scoped to {self.describe()}: the rest of the configuration was "
                "not planned, and may differ from the live store")

    def to_json(self) -> dict[str, list[str]]:
        return {"targets": list(map(str, self.targets)), "namespaces": list(self.namespaces)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Scope:
        return cls(tuple(ResourceKey.parse(t) for t in data["targets"]),
                   tuple(map(str, data["namespaces"])))


def check_known(scope: Scope, known: Collection[ResourceKey]) -> None:
    """Refuse a scope naming what neither the configuration nor the store holds: a typo
    would otherwise plan nothing and look like "no changes"."""
    problems = []
    names = [str(k) for k in known]
    for key in scope.targets:
        if key not in known:
            hint = did_you_mean(str(key), names, "`reconcile live list` shows the store")
            problems.append(f"--target {key} is neither in the configuration nor in the live "
                            f"store; {hint}")
    spaces = {k.namespace for k in known}
    for ns in scope.namespaces:
        if ns not in spaces:
            hint = did_you_mean(ns, spaces, "namespaces are " + ", ".join(sorted(spaces)))
            problems.append(f"--namespace {ns} has no resources in the configuration or the "
                            f"live store; {hint}")
    if problems:
        raise UnknownTarget("\n".join(problems) + "\nNothing was planned.")


def scoped_keys(keys: Iterable[ResourceKey], scope: Scope | None) -> list[ResourceKey]:
    return [k for k in keys if scope is None or k in scope]
