"""JSON Schema generated from the models (SPEC C3): one file per kind plus a
bundle that accepts any kind, for editors (yaml-language-server modelines)
and for third-party validators such as check-jsonschema."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from reconciler.config.models import KINDS
from reconciler.policy.models import POLICY_KINDS

BUNDLE = "reconciler.json"
SCHEMA_BASE = "https://reconciler.dev/schemas/"
SCHEMA_KINDS = {**KINDS, **POLICY_KINDS}


def kind_schema(kind: str, model: type[BaseModel]) -> dict[str, Any]:
    schema = model.model_json_schema(by_alias=True, mode="validation")
    return {"$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": f"{SCHEMA_BASE}{kind.lower()}.json", **schema}


def bundle_schema() -> dict[str, Any]:
    refs, schema = models_json_schema(
        [(model, "validation") for model in SCHEMA_KINDS.values()], by_alias=True,
        ref_template="#/$defs/{model}")
    branches = []
    for kind, model in SCHEMA_KINDS.items():
        ref = refs[(model, "validation")]["$ref"]
        branches.append({"if": {"properties": {"kind": {"const": kind}}, "required": ["kind"]},
                         "then": {"$ref": ref}})
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"{SCHEMA_BASE}{BUNDLE}",
        "title": "reconciler resource (any kind)",
        "type": "object",
        "required": ["apiVersion", "kind", "metadata"],
        "properties": {"kind": {"enum": sorted(SCHEMA_KINDS)}},
        "allOf": branches,
        "$defs": schema.get("$defs", {}),
    }


def render_all() -> dict[str, str]:
    """File name -> JSON text for every schema file."""
    files = {f"{kind.lower()}.json": kind_schema(kind, model)
             for kind, model in SCHEMA_KINDS.items()}
    files[BUNDLE] = bundle_schema()
    return {name: json.dumps(body, indent=2, sort_keys=True) + "\n"
            for name, body in sorted(files.items())}


def write_all(out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in render_all().items():
        path = out / name
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            written.append(path)
    return written


def stale(out: Path) -> list[str]:
    """Names of schema files in ``out`` that differ from what the models generate."""
    expected = render_all()
    problems = [name for name, text in expected.items()
                if not (out / name).exists() or (out / name).read_text(encoding="utf-8") != text]
    extra = sorted(p.name for p in out.glob("*.json") if p.name not in expected)
    return problems + extra
