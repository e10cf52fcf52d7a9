"""plan.diff without deepdiff: an update that only changes leaves lists the same
fields as deepdiff's report of it (random edits of every example resource)."""

from __future__ import annotations

import copy
import random
from pathlib import Path
from typing import Any

from deepdiff import DeepDiff

from reconciler.plan import diff as diff_module
from reconciler.policy.validate import validate_path

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "config"


def _by_deepdiff(old: dict[str, Any], new: dict[str, Any]) -> set[tuple[Any, ...]]:
    """What _deep yields from deepdiff's report (its slow path), as a set."""
    found = set()
    for levels in DeepDiff(old, new, view="tree").values():
        for level in levels:
            path = tuple(level.path(output_format="list"))
            for item in diff_module._secret_ref(old, new, path, level.t1, level.t2):
                found.add(repr(item))
    return found


def _leaves(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _leaves(v, (*path, k))]
    if isinstance(value, list):  # items of a list of distinct strings, as below
        texts = all(isinstance(v, str) for v in value) and len(set(value)) == len(value)
        return [(*path, i) for i in range(len(value))] if texts else []
    return [] if isinstance(value, float) else [path]  # floats are left to deepdiff


def _edit(doc: dict[str, Any], path: tuple[Any, ...], rng: random.Random) -> None:
    *parent, last = path
    target: Any = doc
    for part in parent:
        target = target[part]
    was = target[last]
    if isinstance(target, list):  # a fresh string: the list stays one of distinct strings
        target[last] = f"{was}-changed-{rng.random()}"
        return
    target[last] = rng.choice([f"{was}-changed", 7, True, None, str(was), 0])


def test_leaf_edits_match_deepdiff() -> None:
    result = validate_path(EXAMPLES)
    assert result.desired is not None
    rng = random.Random(15)
    checked = 0
    for res in result.desired.resources.values():
        old = diff_module._document(res)
        paths = _leaves(old)
        for _ in range(20):
            new = copy.deepcopy(old)
            edits = rng.sample(paths, min(len(paths), rng.randint(1, 3)))
            for path in edits:
                _edit(new, path, rng)
            assert diff_module._same_shape(old, new, (), [])
            assert {repr(i) for i in diff_module._deep(old, new)} == _by_deepdiff(old, new)
            checked += 1
    assert checked >= 100


def test_replaced_strings_in_a_list() -> None:
    old = {"spec": {"emails": ["a@x.example", "b@x.example", "c@x.example"]}}
    for new in ({"spec": {"emails": ["a@x.example", "b@y.example", "c@x.example"]}},
                {"spec": {"emails": ["a@y.example", "b@y.example", "c@y.example"]}}):
        assert isinstance(diff_module._tree(old, new), dict)  # not deepdiff
        assert {repr(i) for i in diff_module._deep(old, new)} == _by_deepdiff(old, new)
    swapped = {"spec": {"emails": ["a@x.example", "c@x.example", "b@x.example"]}}
    assert isinstance(diff_module._tree(old, swapped), DeepDiff)


def test_moved_list_items_and_new_keys_still_go_to_deepdiff() -> None:
    old = {"spec": {"hosts": ["a", "b"], "port": 1, "ratio": 1.0}}
    for new in ({"spec": {"hosts": ["b", "a"], "port": 1, "ratio": 1.0}},
                {"spec": {"hosts": ["a", "a"], "port": 1, "ratio": 1.0}},
                {"spec": {"hosts": ["a", "b", "c"], "port": 1, "ratio": 1.0}},
                {"spec": {"hosts": ["a", 2], "port": 1, "ratio": 1.0}},
                {"spec": {"hosts": ["a", "b"], "port": 1, "ratio": 1.0, "extra": "x"}},
                {"spec": {"hosts": ["a", "b"], "port": 1.0, "ratio": 1.0}},
                {"spec": {"hosts": ["a", "b"], "port": 1, "ratio": 2.0}}):
        assert not diff_module._same_shape(old, new, (), [])
        assert isinstance(diff_module._tree(old, new), DeepDiff)
