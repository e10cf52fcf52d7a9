"""Rows to domain objects and back, plus the checks a commit runs before any write."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, fields
from functools import cache
from typing import Any, TypeVar

import orjson

from reconciler.config.desired import (
    CanonicalResource,
    LazyResources,
    ResourceKey,
    canonical_json,
)
from reconciler.state.base import ChangeRejected, SecretValueRefused
from reconciler.state.revisions import (
    Action,
    ApprovedMove,
    Change,
    FieldChange,
    RevisionKind,
    RevisionMeta,
)

T = TypeVar("T")


@cache
def _field_names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in fields(cls))


def from_row(cls: type[T], row: Any, **given: Any) -> T:
    """The dataclass ``cls``: the ``given`` fields, the others from the row's columns
    (attributes) of the same names."""
    taken = {name: getattr(row, name) for name in _field_names(cls) if name not in given}
    return cls(**taken, **given)


# Spec keys that may only ever hold a secret *reference*. The config models
# already enforce this; the store checks again because it is the last place a
# literal could slip into durable storage (an admin API, a script, a bug).
SECRET_FIELDS = frozenset(
    {"password", "clientSecret", "secret", "token", "accessToken", "refreshToken", "apiKey",
     "privateKey"}
)


# 19 digits in a row: an integer that may not fit 64 bits, which orjson would read
# as a float (a long string of digits or a long fraction matches too: harmless)
_LONG_DIGITS = re.compile(r"\d{19}")


def loads(text: str) -> Any:
    """``json.loads``, through orjson where that gives the same value (~3x faster:
    a cold plan reads every stored row). Integers past 64 bits and what orjson
    refuses (NaN, lone surrogates) take the standard library's path."""
    if _LONG_DIGITS.search(text) is None:
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            pass
    return json.loads(text)


def resource_from_columns(
    key: ResourceKey, api_version: str, labels_json: str, spec_json: str
) -> CanonicalResource:
    # The digest is recomputed, never read back: a spec edited directly in the
    # database must show up as different (drift), not hide behind a stale digest.
    return CanonicalResource.build(key, api_version, loads(spec_json), loads(labels_json))


class LiveRows(LazyResources):
    """A head snapshot as the store's (api_version, labels, spec) columns, sorted by key.

    The digest of a row whose JSON is written exactly as the store writes it
    (canonical_json) is the sha256 of that text framed as the resource's body,
    so a plan checks an unchanged resource with one hash and no parse. A row
    whose text differs in any byte (a spec edited by hand, another serialiser)
    is parsed and its digest recomputed, as every row always was."""

    def __init__(self, rows: Mapping[ResourceKey, tuple[str, str, str]]) -> None:
        super().__init__(rows)
        self._rows = rows

    def _make(self, key: ResourceKey) -> CanonicalResource:
        return resource_from_columns(key, *self._rows[key])

    def digest(self, key: ResourceKey) -> str:
        return self[key].digest

    def has_digest(self, key: ResourceKey, digest: str) -> bool:
        if key not in self._made:
            api_version, labels, spec = self._rows[key]
            text = b"".join((b'{"apiVersion":', orjson.dumps(api_version), b',"labels":',
                             labels.encode(), b',"spec":', spec.encode(), b"}"))
            if hashlib.sha256(text).hexdigest() == digest:
                return True  # the very bytes the digest was made of
        return self.digest(key) == digest


def resource_of(key: ResourceKey, body: Mapping[str, Any] | None) -> CanonicalResource | None:
    if body is None:
        return None
    return CanonicalResource.build(key, body["apiVersion"], body["spec"], body.get("labels"))


def resource_from_body(key: ResourceKey, body_json: str | None) -> CanonicalResource | None:
    return resource_of(key, loads(body_json) if body_json is not None else None)


def body_json(res: CanonicalResource) -> str:
    return canonical_json(res.body())


def resource_row(res: CanonicalResource, revision: int, digest: str) -> dict[str, Any]:
    return {
        **res.key._asdict(),
        "api_version": res.api_version,
        "labels": canonical_json(dict(res.labels)),
        "spec": canonical_json(res.spec),
        "digest": digest,
        "revision": revision,
    }


def meta_from_row(row: Any) -> RevisionMeta:
    moves = tuple(ApprovedMove.from_json(m) for m in json.loads(row.credential_moves or "[]"))
    return from_row(RevisionMeta, row, kind=RevisionKind(row.kind), credential_moves=moves)


def meta_columns(meta: RevisionMeta) -> dict[str, Any]:
    moves = [m.to_json() for m in meta.credential_moves]
    return {**asdict(meta), "kind": meta.kind.value,
            "credential_moves": canonical_json(moves) if moves else None}


def change_from_record(
    record: Mapping[str, Any], before_body: str | None, after_body: str | None
) -> Change:
    key = ResourceKey(record["kind"], record["namespace"], record["name"])
    return Change(
        action=Action(record["action"]),
        key=key,
        before=resource_from_body(key, before_body),
        after=resource_from_body(key, after_body),
        fields=tuple(FieldChange(**f) for f in record["fields"]),
    )


def check_changes(changes: Sequence[Change]) -> None:
    """Refuse malformed change sets before the database is touched."""
    seen: set[ResourceKey] = set()
    for change in changes:
        if change.key in seen:
            raise ChangeRejected(
                f"{change.key} appears twice in one commit; a plan holds one change per "
                "resource. Re-run plan."
            )
        seen.add(change.key)
        wants_after = change.action is not Action.DELETE
        if (change.after is not None) != wants_after:
            raise ChangeRejected(
                f"{change.action.value} of {change.key} "
                f"{'needs' if wants_after else 'must not have'} a new version of the resource"
            )
        if change.after is not None:
            if change.after.key != change.key:
                raise ChangeRejected(
                    f"the change for {change.key} carries the resource {change.after.key}"
                )
            _refuse_literal_secrets(change.key, change.after.spec, "spec")


def _refuse_literal_secrets(key: ResourceKey, value: Any, path: str) -> None:
    if isinstance(value, Mapping):
        for name, item in value.items():
            where = f"{path}.{name}"
            if name in SECRET_FIELDS and item is not None and not _is_reference(item):
                # Name the field, never the value: it is very likely a real secret.
                raise SecretValueRefused(
                    f"{key} {where} holds a literal value; the store keeps only secret "
                    "references such as {secretRef: env:NAME}, {secretRef: file:/path} or "
                    "an encrypted enc:v1: value. Nothing was written."
                )
            _refuse_literal_secrets(key, item, where)
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            _refuse_literal_secrets(key, item, f"{path}[{i}]")


def _is_reference(value: Any) -> bool:
    return (
        isinstance(value, Mapping)
        and set(value) == {"secretRef"}
        and isinstance(value["secretRef"], str)
    )
