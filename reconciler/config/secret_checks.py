"""The validate stage for where secret references point (SPEC S2).

The daemon refuses the same references when it resolves them; reporting them
here makes a pull request that points a secret at ``file:/etc/shadow`` or
``env:RECONCILE_TOKEN_KEY`` fail `validate` and `plan` with the file and line,
before anything is applied.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Iterator, Sequence
from typing import Any

from pydantic import BaseModel

from reconciler.config.diagnostics import Diagnostic
from reconciler.config.loaded import LoadedResource
from reconciler.config.models.base import annotation_parts
from reconciler.config.positions import YamlPath
from reconciler.config.secret_places import PlaceRefused, PlacesSettingError, current
from reconciler.config.secrets import SecretRef

CODE = "secret-place"


@functools.cache
def _secret_fields(model: type[BaseModel],
                   seen: frozenset[type] = frozenset()) -> tuple[tuple[str, str], ...]:
    """(attribute, YAML key) of the fields of ``model`` that can hold a SecretRef,
    directly or deeper down; found once per class from its annotations."""
    seen = seen | {model}

    def holds(part: Any) -> bool:
        nested = inspect.isclass(part) and issubclass(part, BaseModel) and part not in seen
        return part is SecretRef or (nested and bool(_secret_fields(part, seen)))

    return tuple((name, info.alias or name) for name, info in model.model_fields.items()
                 if any(holds(a) for a in annotation_parts(info.annotation)))


def model_refs(value: Any, path: YamlPath = ()) -> Iterator[tuple[YamlPath, str]]:
    """(YAML path, reference) of every SecretRef in a validated model. Only fields whose
    type can hold one are visited: walking every node of every document cost ~60 ms
    per 10,000 resources, this a few."""
    if isinstance(value, SecretRef):
        yield path, value.secret_ref
    elif isinstance(value, BaseModel):
        for name, key in _secret_fields(type(value)):
            yield from model_refs(getattr(value, name), (*path, key))
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            yield from model_refs(item, (*path, index))
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from model_refs(item, (*path, key))


def check_secret_places(resources: Sequence[LoadedResource]) -> list[Diagnostic]:
    try:
        places = current()
    except PlacesSettingError as exc:
        return [Diagnostic(code=CODE, message=str(exc),
                           hint="fix the setting in the environment of validate and the "
                           "daemon")]
    out: list[Diagnostic] = []
    for res in resources:
        for path, ref in model_refs(res.model):
            try:
                places.check(ref)
            except PlaceRefused as exc:
                out.append(res.diagnostic(CODE, exc.message, path, hint=exc.hint))
    return out
