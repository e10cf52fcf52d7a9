"""Policy and PolicyException: organisation rules as data (SPEC C8).

Both use the resource envelope, so they can sit in the shipped ``policies/``
folder and anywhere in a user's config repo, and editors can validate them
against ``schemas/policy.json`` / ``schemas/policyexception.json``.
See ``policies/README.md`` for the format.
"""

from __future__ import annotations

import re
from datetime import date
from enum import StrEnum
from typing import Annotated, ClassVar, Literal

from pydantic import AfterValidator, Field
from pydantic_core import PydanticCustomError

from reconciler.config.models import KINDS
from reconciler.config.models.base import Model, NonEmptyStr, Resource, ResourceName
from reconciler.policy.cel import CelCompileError, compile_expression

# The CEL variables of every policy expression: the resource as JSON.
VARIABLES = frozenset({"apiVersion", "kind", "metadata", "spec"})

_PATH_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.([A-Za-z_][A-Za-z0-9_]*|[0-9]+))*$")
_TARGET_RE = re.compile(r"^[A-Za-z]+/([a-z0-9-]+/)?[a-z0-9-]+$")


class PolicySeverity(StrEnum):
    DENY = "deny"  # an error: validate fails
    WARN = "warn"  # a warning: reported, validate passes


def _check_cel(value: str) -> str:
    try:
        compile_expression(value, VARIABLES)
    except CelCompileError as exc:
        raise PydanticCustomError(
            "cel", "{message}", {"message": exc.message, "hint": exc.context}
        ) from None
    return value


def _check_kind(value: str) -> str:
    if value not in KINDS:
        raise PydanticCustomError(
            "kind", "unknown kind {value}; policies can match {known}",
            {"value": repr(value), "known": ", ".join(sorted(KINDS))})
    return value


def _check_path(value: str) -> str:
    if not _PATH_RE.match(value):
        raise PydanticCustomError(
            "path", "{value} is not a dotted field path like spec.auth.type",
            {"value": repr(value)})
    return value


def _check_target(value: str) -> str:
    if not _TARGET_RE.match(value):
        raise PydanticCustomError(
            "resource_ref",
            "{value} is not KIND/NAME or KIND/NAMESPACE/NAME, e.g. OutgoingServer/legacy-relay",
            {"value": repr(value)})
    _check_kind(value.split("/", 1)[0])
    return value


CelExpression = Annotated[str, AfterValidator(_check_cel)]
KindName = Annotated[str, AfterValidator(_check_kind)]
FieldPath = Annotated[str, AfterValidator(_check_path)]
ResourceTarget = Annotated[str, AfterValidator(_check_target)]


class Selector(Model):
    """Which resources a policy looks at; every given criterion must hold."""

    labels: dict[str, str] = Field(
        default_factory=dict, description="Labels the resource must carry, all of them.")
    namespaces: list[ResourceName] = Field(
        default_factory=list, description="Namespaces (MSP accounts); empty means any.")


class PolicySpec(Model):
    description: str | None = Field(default=None, description="Why the rule exists.")
    kinds: list[KindName] = Field(min_length=1, description="Kinds of resource it checks.")
    severity: PolicySeverity = Field(description="deny fails validation, warn reports.")
    match: Selector | None = Field(
        default=None, description="Only resources with these labels/namespaces.")
    exclude: Selector | None = Field(
        default=None, description="Skip resources with these labels/namespaces, e.g. env: dev.")
    when: CelExpression | None = Field(
        default=None, description="CEL precondition; the policy applies only when true.")
    condition: CelExpression = Field(description="CEL; true means the resource complies.")
    path: FieldPath | list[FieldPath] = Field(
        default="spec",
        description="Field the finding points at (dotted camelCase); with a list, the first "
        "one written in the resource's YAML.")
    message: NonEmptyStr = Field(description="What is wrong, in plain words.")
    hint: str | None = Field(default=None, description="How to fix it.")
    enabled: bool = Field(
        default=True, description="false switches the policy off (e.g. overriding a shipped one).")


class Policy(Resource):
    KIND: ClassVar[str] = "Policy"
    kind: Literal["Policy"]
    spec: PolicySpec


class PolicyExceptionSpec(Model):
    policy: ResourceName = Field(description="metadata.name of the policy it waives.")
    resources: list[ResourceTarget] = Field(
        min_length=1, description="KIND/NAME in the exception's namespace, or KIND/NAMESPACE/NAME.")
    reason: NonEmptyStr = Field(description="Why the waiver is acceptable; shown to reviewers.")
    expires: date | None = Field(
        default=None, description="Last day the waiver holds; afterwards it is an error.")


class PolicyException(Resource):
    KIND: ClassVar[str] = "PolicyException"
    kind: Literal["PolicyException"]
    spec: PolicyExceptionSpec


POLICY_KINDS: dict[str, type[Resource]] = {cls.KIND: cls for cls in (Policy, PolicyException)}
