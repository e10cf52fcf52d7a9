"""Pydantic validation errors -> plain-words diagnostics at file:line:col (SPEC C4)."""

from __future__ import annotations

import re
from functools import cache
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from reconciler.config.diagnostics import Diagnostic, did_you_mean
from reconciler.config.loader import Document, PosDict, diagnostic_at, value_at
from reconciler.config.models.base import annotation_parts
from reconciler.config.positions import YamlPath
from reconciler.config.secrets import FIX_HINT

# Values at these paths are never echoed back: they may be real secrets.
_SENSITIVE = re.compile(r"pass|secret|token|key|credential", re.IGNORECASE)


def _clean_loc(data: Any, loc: YamlPath) -> YamlPath:
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
            stack.extend(a for a in annotation_parts(info.annotation)
                         if isinstance(a, type) and issubclass(a, BaseModel))
    return frozenset(names)


# pydantic error type -> (message, hint); {shown} is the value (or "this value"),
# {lt}/{le}/{gt}/{ge} the limit, {min_length}/{max_length} the length from ctx.
_PLAIN: dict[str, tuple[str, str]] = {
    "missing": ("required field is missing", ""),
    "literal_secret": ("a literal secret is not allowed here", FIX_HINT),
    "less_than": ("{shown} must be less than {lt}", ""),
    "less_than_equal": ("{shown} is above the maximum {le}", ""),
    "greater_than": ("{shown} must be greater than {gt}", ""),
    "greater_than_equal": ("{shown} is below the minimum {ge}", ""),
    "finite_number": ("{shown} is not a finite number", ""),
    **dict.fromkeys(("int_type", "int_parsing", "int_from_float"),
                    ("{shown} is not a whole number", "")),
    **dict.fromkeys(("float_type", "float_parsing"), ("{shown} is not a number", "")),
    **dict.fromkeys(("bool_type", "bool_parsing"),
                    ("{shown} is not a boolean", "write true or false")),
    "list_type": ("expected a list, got {shown}",
                  "write it as a YAML list: [a, b] or '- a' lines"),
    **dict.fromkeys(("dict_type", "model_type", "model_attributes_type"),
                    ("expected a mapping, got {shown}", "")),
    "string_too_short": ("must not be empty", ""),
    "too_short": ("needs at least {min_length} item(s)", ""),
    "string_too_long": ("is longer than {max_length} characters", ""),
}


def _message(err: ErrorDetails, sensitive: bool) -> tuple[str, str]:
    """(message, hint) for one pydantic error."""
    kind = err["type"]
    ctx = err.get("ctx", {}) or {}
    value = err.get("input")
    shown = "this value" if sensitive else show_value(value)
    if kind in _PLAIN:
        message, hint = _PLAIN[kind]
        words = {k: _num(ctx.get(k)) for k in ("lt", "le", "gt", "ge")}
        words.update({k: str(ctx.get(k)) for k in ("min_length", "max_length")})
        return message.format(shown=shown, **words), hint
    if kind == "string_type":
        hint = "write a single value" if isinstance(value, list | dict) else "quote the value"
        return f"expected text, got {shown}", hint
    if kind in ("enum", "literal_error"):
        expected = ctx.get("expected", "")
        return f"{shown} is not one of {expected}", _close_choice(value, expected)
    if kind == "union_tag_invalid":
        # the input is the whole mapping; the tag is the value that is wrong
        return (f"{show_value(ctx.get('tag'))} is not a known type; expected one of "
                f"{ctx.get('expected_tags')}",
                _close_choice(ctx.get("tag"), str(ctx.get("expected_tags", ""))))
    if kind == "union_tag_not_found" and isinstance(value, dict):
        tag = str(ctx.get("discriminator", "type")).strip("'")
        return f"`{tag}` is required here", ""
    if kind == "union_tag_not_found":
        return f"expected a mapping, got {shown}", ""
    if kind in ("value_error", "assertion_error"):
        return err["msg"].removeprefix("Value error, "), ""
    return err["msg"], ""


def _close_choice(value: Any, expected: str) -> str:
    choices = re.findall(r"'([^']+)'", expected)
    if isinstance(value, str) and choices:
        return did_you_mean(value.lower(), choices, cutoff=0.5)
    return ""


def diagnostics_from(exc: ValidationError, document: Document,
                     model: type[BaseModel]) -> list[Diagnostic]:
    out = []
    for err in exc.errors(include_url=False):
        loc = _clean_loc(document.data, tuple(err["loc"]))
        if err["type"] == "union_tag_invalid":  # point at `type: ...`, not at the mapping
            loc = (*loc, str((err.get("ctx") or {}).get("discriminator", "type")).strip("'"))
        sensitive = any(isinstance(s, str) and _SENSITIVE.search(s) for s in loc)
        if err["type"] == "extra_forbidden":
            name = str(loc[-1]) if loc else "?"
            hint = did_you_mean(name, _aliases(model), "remove it; see the schema in schemas/")
            message, key = f"unknown field {name!r}", True
        else:
            message, hint = _message(err, sensitive)
            key = err["type"] == "missing"
        parent_is_map = isinstance(value_at(document.data, loc[:-1]), PosDict)
        out.append(diagnostic_at(document, loc, f"schema:{err['type']}", message, hint=hint,
                                 key=key and parent_is_map))
    return out

