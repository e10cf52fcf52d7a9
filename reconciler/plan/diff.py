"""Desired vs live: which resources change, and which of their fields (SPEC P1).

Digests are compared first and a field-level diff runs only for resources
whose digest differs, so planning stays linear in the number of resources and
pays for it only where something changed. That diff is deepdiff's report; when
only leaves (or strings in place in a list) changed, the report is built
directly, with the same content, and deepdiff (with numpy) is never imported.

Field values are redacted *before* they are diffed: a secret reference is
compared and shown in its printable form, so no field change, and therefore
no rendering of one, ever holds ciphertext (resolved values never exist
here). The full resources in each Change keep their references as written,
because that is what apply stores.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from reconciler.config.desired import (
    CanonicalResource,
    DesiredState,
    ResourceKey,
    digest_at,
    has_digest,
)
from reconciler.config.gcpause import gc_paused
from reconciler.config.positions import YamlPath
from reconciler.config.secrets import redact
from reconciler.plan.scope import Scope, scoped_keys
from reconciler.state.revisions import Action, Change, FieldChange, LiveState

# deepdiff report types whose value exists only on one side.
_ADDED = frozenset({"dictionary_item_added", "iterable_item_added", "set_item_added"})
_REMOVED = frozenset({"dictionary_item_removed", "iterable_item_removed", "set_item_removed"})
# Leaf types compared without deepdiff (changed floats are left to it).
_LEAVES = frozenset({str, int, bool, type(None)})


@dataclass(frozen=True, slots=True)
class DiffResult:
    changes: tuple[Change, ...]
    # Live resources the config does not mention, kept because prune was off.
    unmanaged: tuple[ResourceKey, ...]


def diff(
    desired: DesiredState,
    live: LiveState,
    *,
    derived: Mapping[ResourceKey, set[str]] | None = None,
    prune: bool = False,
    scope: Scope | None = None,
) -> DiffResult:
    """Changes that turn ``live`` into ``desired``, ordered by (kind, namespace, name);
    with a ``scope`` only for the resources in it (the rest is neither changed nor listed)."""
    derived = derived or {}
    changes: list[Change] = []
    unmanaged: list[ResourceKey] = []
    with gc_paused():
        for key in sorted(scoped_keys(desired.resources.keys() | live.resources.keys(), scope)):
            if key in desired.resources and key in live.resources:
                # digests first: a lazy side parses only the resources that differ
                if not has_digest(live.resources, key, digest_at(desired.resources, key)):
                    want, have = desired.resources[key], live.resources[key]
                    fields = _fields(have, want, derived.get(key, set()))
                    changes.append(Change(Action.UPDATE, key, have, want, fields))
                continue
            want = desired.resources.get(key)
            have = live.resources.get(key)
            if want is not None:
                fields = _fields(None, want, derived.get(key, set()))
                changes.append(Change(Action.CREATE, key, None, want, fields))
            elif prune:
                changes.append(Change(Action.DELETE, key, have, None, _fields(have, None, set())))
            else:
                unmanaged.append(key)
    return DiffResult(tuple(changes), tuple(unmanaged))


def _fields(
    before: CanonicalResource | None, after: CanonicalResource | None, derived: set[str]
) -> tuple[FieldChange, ...]:
    marks = {tuple(d.split(".")) for d in derived}
    if before is None or after is None:
        # A create or delete lists every leaf; the walk is sorted, so no sort after it.
        leaves: list[tuple[YamlPath, Any]] = []
        _leaves(_document(after if before is None else before), (), leaves, redact)
        if before is None:
            return tuple(FieldChange(_dotted(p), None, v, _is_derived(p, marks))
                         for p, v in leaves)
        return tuple(FieldChange(_dotted(p), v, None) for p, v in leaves)
    by_path: dict[str, FieldChange] = {}
    for path, was, now in _deep(redact(_document(before)), redact(_document(after))):
        dotted = _dotted(path)
        by_path[dotted] = FieldChange(dotted, was, now, now is not None and
                                      _is_derived(path, marks))
    return tuple(by_path[p] for p in sorted(by_path, key=_natural))


def _document(res: CanonicalResource) -> dict[str, Any]:
    """The diffed part, laid out like the YAML so paths read ``metadata.labels.env``."""
    doc: dict[str, Any] = {"apiVersion": res.api_version, "spec": res.spec}
    if res.labels:  # no labels is the common case; "metadata.labels: {}" would be noise
        doc["metadata"] = {"labels": dict(res.labels)}
    return doc


def _dotted(path: YamlPath) -> str:
    return ".".join(map(str, path))


def _tree(old: dict[str, Any], new: dict[str, Any]) -> Mapping[str, Sequence[Any]]:
    """deepdiff's tree view of the change, by report type."""
    changed: list[tuple[YamlPath, Any, Any]] = []
    if _same_shape(old, new, (), changed):
        # Only leaves changed: deepdiff would report exactly these (values_changed or
        # type_changes, alike below). Most updates are of this kind, and skipping
        # deepdiff skips its numpy import (~0.2 s of a warm plan).
        return {"values_changed": [_Level(*c) for c in changed]}
    # Imported here: deepdiff pulls in numpy, worth paying only when lists or
    # keys changed.
    from deepdiff import DeepDiff

    return DeepDiff(old, new, view="tree")  # type: ignore[no-any-return]


@dataclass(frozen=True, slots=True)
class _Level:
    """The part of deepdiff's DiffLevel that _deep reads."""

    at: YamlPath
    t1: Any
    t2: Any

    def path(self, output_format: str) -> YamlPath:
        assert output_format == "list", "only the list form is read"
        return self.at


def _deep(old: dict[str, Any], new: dict[str, Any]) -> Iterator[tuple[YamlPath, Any, Any]]:
    """Changed leaves between two already redacted documents."""
    for report, levels in _tree(old, new).items():
        for level in levels:
            path: YamlPath = tuple(level.path(output_format="list"))
            if report in _ADDED or report in _REMOVED:
                leaves: list[tuple[YamlPath, Any]] = []
                added = report in _ADDED
                _leaves(level.t2 if added else level.t1, path, leaves, _same)
                yield from ((p, None, v) if added else (p, v, None) for p, v in leaves)
            else:
                yield from _secret_ref(old, new, path, level.t1, level.t2)


def _secret_ref(old: dict[str, Any], new: dict[str, Any], path: YamlPath, was: Any,
                now: Any) -> Iterator[tuple[YamlPath, Any, Any]]:
    if path and path[-1] == "secretRef":
        # Show the reference as one value, the way it is written in YAML.
        yield path[:-1], _at(old, path[:-1]), _at(new, path[:-1])
    else:
        yield path, was, now


def _same_shape(old: Any, new: Any, path: YamlPath,
                out: list[tuple[YamlPath, Any, Any]]) -> bool:
    """Collect the leaves that differ when both sides have the same keys and lists
    that are equal or have one string replaced; False for anything else (deepdiff
    decides how items moved, and its rules for floats). A type change at a leaf is
    a change, as in deepdiff."""
    if old.__class__ is dict and new.__class__ is dict:
        if old.keys() != new.keys():
            return False
        return all(_same_shape(v, new[k], (*path, k), out) for k, v in old.items())
    if old.__class__ is list and new.__class__ is list:
        return _same_list(old, new, path, out)
    if old.__class__ is float and new.__class__ is float:
        return bool(old == new)  # a changed float (or NaN): deepdiff's rules
    if old.__class__ not in _LEAVES or new.__class__ not in _LEAVES:
        return False
    if old.__class__ is not new.__class__ or old != new:
        out.append((path, old, new))
    return True


def _same_list(old: list[Any], new: list[Any], path: YamlPath,
               out: list[tuple[YamlPath, Any, Any]]) -> bool:
    """Equal lists, or lists of distinct strings where items were replaced in place
    by strings the other side does not hold: no item can pair up with another
    position, so deepdiff (difflib) reports each as changed. Anything else is
    deepdiff's to order."""
    try:  # equal as JSON: 1 and 1.0 or True and 1 differ here, as in deepdiff
        if orjson.dumps(old) == orjson.dumps(new):
            return True
    except orjson.JSONEncodeError:
        return False
    if len(old) != len(new) or any(v.__class__ is not str for v in (*old, *new)):
        return False
    before, after = set(old), set(new)
    if len(before) != len(old) or len(after) != len(new):
        return False
    changed = [i for i, (was, now) in enumerate(zip(old, new, strict=True)) if was != now]
    if any(new[i] in before or old[i] in after for i in changed):
        return False
    out.extend(((*path, i), old[i], new[i]) for i in changed)
    return True


def _same(value: Any) -> Any:
    return value


def _leaves(
    value: Any, prefix: YamlPath, out: list[tuple[YamlPath, Any]], clean: Callable[[Any], Any]
) -> None:
    """Scalar values by path, in sorted order; secret references (passed through
    ``clean``) and empty containers count as scalars."""
    if isinstance(value, dict) and value:
        if len(value) == 1 and "secretRef" in value:
            out.append((prefix, clean(value)))
            return
        for k in sorted(value):
            _leaves(value[k], (*prefix, k), out, clean)
    elif isinstance(value, list) and value:
        for i, v in enumerate(value):
            _leaves(v, (*prefix, i), out, clean)
    else:
        out.append((prefix, value))


def _at(doc: Any, path: Sequence[str | int]) -> Any:
    for part in path:
        try:
            doc = doc[part]
        except (KeyError, IndexError, TypeError):
            return None
    return doc


def _is_derived(path: YamlPath, marks: set[tuple[str, ...]]) -> bool:
    """A derived path, or inside one: a derived list or mapping shows up leaf by leaf."""
    if not marks:
        return False
    parts = tuple(map(str, path))
    return any(parts[:i] in marks for i in range(1, len(parts) + 1))


def _natural(path: str) -> tuple[tuple[int, int, str], ...]:
    """Sort ``spec.x.10`` after ``spec.x.9``."""
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in path.split("."))
