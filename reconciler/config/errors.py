"""Pydantic validation errors -> plain-words diagnostics at file:line:col (SPEC C4)."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator
from functools import cache
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from reconciler.config.diagnostics import Diagnostic
from reconciler.config.loader import Document, PosDict, diagnostic_at
from reconciler.config.secrets import FIX_HINT

# Values at these paths are never echoed back: they may be real secrets.
_SENSITIVE = re.compile(r"pass|secret|token|key|credential", re.IGNORECASE)


def _clean_loc(data: Any, loc: tuple[str | int, ...]) -> tuple[str | int, ...]:
    """Drop pydantic's union-branch segments (``'basic'``, ``'function-after[...]'``)
    that are not keys of the YAML, keeping the path the user wrote."""
    out: list[str | int] = []
    node = data
    for i, seg in enumerate(loc):
        if isinstance(node, dict):
            if seg in node:
                out.append(seg)
                node = node[seg]
                continue
            is_branch = isinstance(seg, str) and (
                "[" in seg or seg == node.get("type") or seg in ("str", "int", "float", "bool"))
            if is_branch and i < len(loc) - 1:
                continue
            out.append(seg)
            node = None
        elif isinstance(node, list) and isinstance(seg, int) and seg < len(node):
            out.append(seg)
            node = node[seg]
        else:
            if isinstance(seg, str) and "[" in seg:
                continue
            out.append(seg)
            node = None
    return tuple(out)


def show_value(value: Any) -> str:
    """A value as the user wrote it, short, or its shape (a mapping, a list)."""
    if isinstance(value, str):
        return repr(value) if len(value) <= 60 else repr(value[:57] + "...")
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "empty (null)"
    return str(value).lower() if isinstance(value, bool) else str(value)


def _num(value: Any) -> str:
    """A limit as people write it: 600, not 600.0."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


@cache
def _aliases(model: type[BaseModel]) -> frozenset[str]:
    """Every camelCase field name reachable from a model, for "did you mean" hints."""
    names: set[str] = set()
    stack: list[Any] = [model]
    seen: set[Any] = set()
    while stack:
        cls = stack.pop()
        if cls in seen:
            continue
        seen.add(cls)
        for attr, info in cls.model_fields.items():
            names.add(info.alias or attr)
            stack.extend(_models_in(info.annotation))
    return frozenset(names)


def _models_in(annotation: Any) -> Iterator[type[BaseModel]]:
    import typing

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
    for arg in typing.get_args(annotation):
        yield from _models_in(arg)


def _message(err: ErrorDetails, sensitive: bool) -> tuple[str, str]:
    """(message, hint) for one pydantic error."""
    kind = err["type"]
    ctx = err.get("ctx", {}) or {}
    value = err.get("input")
    shown = "this value" if sensitive else show_value(value)
    if kind == "missing":
        return "required field is missing", ""
    if kind == "literal_secret":
        return "a literal secret is not allowed here", FIX_HINT
    if kind in ("less_than_equal", "less_than"):
        if kind == "less_than":
            return f"{shown} must be less than {_num(ctx.get('lt'))}", ""
        return f"{shown} is above the maximum {_num(ctx.get('le'))}", ""
    if kind == "greater_than":
        return f"{shown} must be greater than {_num(ctx.get('gt'))}", ""
    if kind == "greater_than_equal":
        return f"{shown} is below the minimum {_num(ctx.get('ge'))}", ""
    if kind == "finite_number":
        return f"{shown} is not a finite number", ""
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return f"{shown} is not a whole number", ""
    if kind in ("float_type", "float_parsing"):
        return f"{shown} is not a number", ""
    if kind in ("bool_type", "bool_parsing"):
        return f"{shown} is not a boolean", "write true or false"
    if kind in ("string_type",):
        if isinstance(value, list | dict):
            return f"expected text, got {shown}", "write a single value"
        return f"expected text, got {shown}", "quote the value"
    if kind in ("list_type",):
        return f"expected a list, got {shown}", "write it as a YAML list: [a, b] or '- a' lines"
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return f"expected a mapping, got {shown}", ""
    if kind == "string_too_short":
        return "must not be empty", ""
    if kind == "too_short":
        return f"needs at least {ctx.get('min_length')} item(s)", ""
    if kind == "string_too_long":
        return f"is longer than {ctx.get('max_length')} characters", ""
    if kind in ("enum", "literal_error"):
        expected = ctx.get("expected", "")
        return f"{shown} is not one of {expected}", _close_choice(value, expected)
    if kind in ("union_tag_invalid",):
        # the input is the whole mapping; the tag is the value that is wrong
        return (f"{show_value(ctx.get('tag'))} is not a known type; expected one of "
                f"{ctx.get('expected_tags')}",
                _close_choice(ctx.get("tag"), str(ctx.get("expected_tags", ""))))
    if kind == "union_tag_not_found":
        if not isinstance(value, dict):
            return f"expected a mapping, got {shown}", ""
        tag = str(ctx.get("discriminator", "type")).strip("'")
        return f"`{tag}` is required here", ""
    if kind == "value_error" or kind == "assertion_error":
        return err["msg"].removeprefix("Value error, "), ""
    return err["msg"], ""


def _close_choice(value: Any, expected: str) -> str:
    choices = re.findall(r"'([^']+)'", expected)
    if isinstance(value, str) and choices:
        close = difflib.get_close_matches(value.lower(), choices, n=1, cutoff=0.5)
        if close:
            return f"did you mean {close[0]!r}?"
    return ""


def diagnostics_from(
    exc: ValidationError, document: Document, model: type[BaseModel]
) -> list[Diagnostic]:
    out = []
    for err in exc.errors(include_url=False):
        loc = _clean_loc(document.data, tuple(err["loc"]))
        if err["type"] == "union_tag_invalid":  # point at `type: ...`, not at the mapping
            loc = (*loc, str((err.get("ctx") or {}).get("discriminator", "type")).strip("'"))
        sensitive = any(isinstance(s, str) and _SENSITIVE.search(s) for s in loc)
        if err["type"] == "extra_forbidden":
            name = str(loc[-1]) if loc else "?"
            close = difflib.get_close_matches(name, sorted(_aliases(model)), n=1)
            hint = (f"did you mean {close[0]!r}?" if close
                    else "remove it; see the schema in schemas/")
            message, key = f"unknown field {name!r}", True
        else:
            message, hint = _message(err, sensitive)
            key = err["type"] == "missing"
        parent_is_map = isinstance(_walk(document.data, loc[:-1]), PosDict)
        out.append(diagnostic_at(document, loc, f"schema:{err['type']}", message, hint=hint,
                                 key=key and parent_is_map))
    return out


def _walk(data: Any, loc: tuple[str | int, ...]) -> Any:
    node = data
    for seg in loc:
        try:
            node = node[seg]
        except (KeyError, IndexError, TypeError):
            return None
    return node
