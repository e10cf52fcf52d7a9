"""CEL's comprehension macros (all, exists, exists_one, map, filter) as closures.

Each builder takes the compiled receiver, the bound variable, the compiled
argument expressions and the receiver's source text (for error messages) and
returns the closure that runs the macro on an activation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from reconciler.policy import cel_ops as ops
from reconciler.policy.cel_ops import Activation, CelError, Node

MacroBuilder = Callable[[Node, str, list[Node], str], Node]


def _items(value: Any, name: str, where: str) -> list[Any]:
    if type(value) is list:
        return value
    if type(value) is dict:
        return list(value)  # CEL iterates a map's keys
    raise CelError(f"{name}() needs a list or map, but {where} is {ops.type_name(value)}")


def _bool_results(target: Node, var: str, body: Node, act: Activation, name: str,
                  where: str) -> tuple[list[bool], CelError | None]:
    results: list[bool] = []
    error: CelError | None = None
    scope = dict(act)
    for item in _items(target(act), name, where):
        scope[var] = item
        try:
            value = body(scope)
        except CelError as exc:
            error = error or exc
            continue
        if type(value) is not bool:
            error = error or ops.no_overload(name, value)
            continue
        results.append(value)
    return results, error


def _quantifier(name: str, decides: bool | None) -> MacroBuilder:
    """all() (one false decides), exists() (one true decides), or, for ``decides=None``,
    exists_one(). As with && and ||, an error on some item is absorbed when another
    item alone decides the result."""

    def build(target: Node, var: str, bodies: list[Node], where: str) -> Node:
        def quantified(act: Activation) -> bool:
            results, error = _bool_results(target, var, bodies[0], act, name, where)
            if decides is not None and decides in results:
                return decides
            if error is not None:
                raise error
            return results.count(True) == 1 if decides is None else not decides

        return quantified

    return build


def _collect(name: str) -> MacroBuilder:
    """map(v, f), map(v, p, f) and filter(v, p): the items the predicate ``p`` keeps
    (all without one), each transformed by ``f`` (filter keeps the item itself)."""

    def build(target: Node, var: str, bodies: list[Node], where: str) -> Node:
        keep = bodies[0] if name == "filter" or len(bodies) == 2 else None
        transform = None if name == "filter" else bodies[-1]

        def collect(act: Activation) -> list[Any]:
            scope = dict(act)
            result = []
            for item in _items(target(act), name, where):
                scope[var] = item
                if keep is not None and _require_bool(keep(scope), name) is False:
                    continue
                result.append(item if transform is None else transform(scope))
            return result

        return collect

    return build


def _require_bool(value: Any, name: str) -> bool:
    if type(value) is not bool:
        raise ops.no_overload(name, value)
    return value


MACROS: dict[str, MacroBuilder] = {
    "all": _quantifier("all", False),
    "exists": _quantifier("exists", True),
    "exists_one": _quantifier("exists_one", None),
    "map": _collect("map"),
    "filter": _collect("filter"),
}
