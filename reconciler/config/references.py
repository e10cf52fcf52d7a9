"""Cross-resource references: every field annotated with ``Ref`` must name an
existing resource of that kind in the same namespace (SPEC C4)."""

from __future__ import annotations

import typing
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cache

from pydantic import BaseModel

from reconciler.config.diagnostics import Diagnostic, did_you_mean
from reconciler.config.loaded import NOTHING_UNLOADED, LoadedResource, Unloaded
from reconciler.config.models.base import Ref, annotation_parts
from reconciler.config.positions import YamlPath


@dataclass(frozen=True, slots=True)
class RefField:
    attr: str
    alias: str
    kind: str
    many: bool


@cache
def ref_fields(spec_cls: type[BaseModel]) -> tuple[RefField, ...]:
    """The reference fields of a spec model, found from its annotations once."""
    out = []
    for attr, info in spec_cls.model_fields.items():
        # pydantic moves a field's own Annotated[...] metadata into info.metadata
        parts = (*info.metadata, *annotation_parts(info.annotation))
        ref = next((p for p in parts if isinstance(p, Ref)), None)
        if ref is not None:
            many = typing.get_origin(info.annotation) is list
            out.append(RefField(attr, info.alias or attr, ref.kind, many))
    return tuple(out)


def iter_references(res: LoadedResource) -> Iterator[tuple[RefField, str, YamlPath]]:
    """(field, referenced name, YAML path) for every reference a resource makes."""
    spec = res.model.spec
    for field in ref_fields(type(spec)):
        value = getattr(spec, field.attr)
        if value is None:
            continue
        if field.many:
            for i, name in enumerate(value):
                yield field, name, ("spec", field.alias, i)
        else:
            yield field, value, ("spec", field.alias)


def elsewhere(names: Mapping[tuple[str, str], set[str]], kind: str, target: str,
              namespace: str) -> list[str]:
    """The other namespaces that hold a ``kind`` named ``target`` (for the hint)."""
    return sorted(ns for (k, ns), v in names.items() if k == kind and target in v
                  and ns != namespace)


def check_references(resources: Sequence[LoadedResource],
                     unloaded: Unloaded = NOTHING_UNLOADED,
                     names: Mapping[tuple[str, str], set[str]] | None = None) -> list[Diagnostic]:
    """Dangling references of ``resources``; ``names`` (kind, namespace) -> names is every
    resource of the repo when ``resources`` are only some of them (the incremental plan);
    what ``unloaded`` may hold is not reported (a knock-on of a file that did not load)."""
    if names is None:
        index: dict[tuple[str, str], set[str]] = {}
        for res in resources:
            kind, namespace, name = res.key
            index.setdefault((kind, namespace), set()).add(name)
        names = index
    found = []
    for res in resources:
        namespace = res.model.metadata.namespace
        for field, target, path in iter_references(res):
            existing = names.get((field.kind, namespace), set())
            if target in existing or unloaded.may_hold(field.kind, namespace, target):
                continue
            others = elsewhere(names, field.kind, target, namespace)
            if others:
                otherwise = (f"{field.kind} {target!r} exists in namespace {others[0]!r}; "
                             "references stay within one namespace")
            else:
                article = "an" if field.kind[0] in "AEIOU" else "a"
                otherwise = f"add {article} {field.kind} named {target!r} or fix the name"
            found.append(res.diagnostic(
                "dangling-reference",
                f"{field.kind} {target!r} does not exist in namespace {namespace!r}", path,
                hint=did_you_mean(target, existing, otherwise)))
    return found
