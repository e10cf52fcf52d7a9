"""The slow path: an expression outside the compiled subset runs on cel-python.

Timestamps, durations, bytes, unsigned ints, ``type()`` and message literals
are rare in policies; such an expression is evaluated by cel-python's own
interpreter, with our helper functions added and values converted to and from
``celtypes`` at the boundary.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import celpy
import lark
from celpy import celtypes
from celpy.adapter import json_to_cel
from celpy.evaluation import CELEvalError

from reconciler.policy import cel_ops as ops
from reconciler.policy.cel_ops import Activation, CelError, Node
from reconciler.policy.functions import HELPERS


def _plain(value: Any) -> Any:
    """cel-python value -> plain JSON-ish Python value."""
    if isinstance(value, celtypes.BoolType):
        return bool(value)
    if isinstance(value, celtypes.IntType | celtypes.UintType):
        return int(value)
    if isinstance(value, celtypes.DoubleType):
        return float(value)
    if isinstance(value, celtypes.StringType):
        return str(value)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {_plain(k): _plain(v) for k, v in value.items()}
    return value


def _celpy_function(fn: Callable[..., Any]) -> Callable[..., Any]:
    def wrapped(*args: Any) -> Any:
        try:
            return json_to_cel(fn(*(_plain(a) for a in args)))
        except CelError as exc:
            return CELEvalError(str(exc), TypeError, None)

    return wrapped


# Only the functions cel-python lacks: its own size/matches/... keep its semantics.
_CELPY_FUNCTIONS = {
    name: _celpy_function(fn)
    for name, fn in {**ops.BUILTINS, **HELPERS}.items()
    if name not in celpy.evaluation.base_functions
}


def interpreted(tree: lark.Tree) -> Node:
    environment = celpy.Environment()
    runner = celpy.InterpretedRunner(environment, tree, _CELPY_FUNCTIONS)

    def run(act: Activation) -> Any:
        context = {name: json_to_cel(value) for name, value in act.items()}
        try:
            result = runner.evaluate(context)
        except CELEvalError as exc:
            raise CelError(str(exc.args[0]) if exc.args else "evaluation error") from None
        except Exception as exc:  # cel-python raises plain Python errors for some bad input
            raise CelError(f"{type(exc).__name__}: {exc}") from None
        if isinstance(result, CELEvalError):
            raise CelError(str(result.args[0]) if result.args else "evaluation error")
        return _plain(result)

    return run
