"""The resource envelope and the building blocks every kind shares.

Each kind lives in its own module and defines ``<Kind>Spec`` plus the
``<Kind>`` resource. YAML is camelCase, Python snake_case (pydantic aliases).
Fields that name another resource are annotated with :class:`Ref`, which is
all ``config.references`` needs to check them.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache
from typing import Annotated, Any, ClassVar, Literal, Self, get_args
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StringConstraints,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

from reconciler.config.header_text import HeaderInjectionError, check_header_text

API_GROUP = "reconciler.dev"
API_VERSION = f"{API_GROUP}/v1"

_NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_HOST_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")


@dataclass(frozen=True, slots=True)
class Ref:
    """Marks a field whose value is the name of another resource of ``kind``
    in the same namespace."""

    kind: str


def annotation_parts(annotation: Any) -> Iterator[Any]:
    """``annotation`` and all it nests: union members, item types, ``Annotated`` metadata."""
    yield annotation
    for arg in get_args(annotation):
        yield from annotation_parts(arg)


def _check_name(value: str) -> str:
    if not _NAME_RE.match(value):
        raise PydanticCustomError(
            "resource_name",
            "'{value}' is not a valid name: use 1-63 lowercase letters, digits and '-', "
            "starting and ending with a letter or digit",
            {"value": value})
    return value


def _check_host(value: str) -> str:
    if "://" in value or "/" in value:
        raise PydanticCustomError(
            "hostname", "'{value}' is not a host name; give only the host, e.g. smtp.example.com",
            {"value": value})
    host = value.rstrip(".")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]  # bracketed IPv6 literal
    if ":" in host:
        try:
            ipaddress.IPv6Address(host)
            return value
        except ValueError:
            raise PydanticCustomError(
                "hostname",
                "'{value}' is not a host name; put the port in the `port` field",
                {"value": value},
            ) from None
    if len(host) > 253 or not all(_HOST_LABEL.match(label) for label in host.split(".")):
        raise PydanticCustomError(
            "hostname", "'{value}' is not a valid host name", {"value": value})
    return value


def _check_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise PydanticCustomError(
            "url", "'{value}' is not an absolute http(s) URL", {"value": value})
    return value


# The common shape of an address, checked without email_validator (~130 µs a call,
# most of validating a large repo). Anything else, including every invalid
# address, goes through email_validator for the full rules and its wording;
# tests/config/test_email_fast_path.py checks the two never disagree.
_PLAIN_EMAIL = re.compile(
    r"^(?=.{3,254}$)(?=.{1,64}@)[A-Za-z0-9_+-]+(?:\.[A-Za-z0-9_+-]+)*"
    r"@(?!.*--)(?=.{4,253}$)(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+"
    r"[A-Za-z]{2,63}$")
# email_validator.SPECIAL_USE_DOMAIN_NAMES without "test" (test_environment=True allows
# it), copied so that the fast path never imports email_validator: its import compiles
# its RFC regexes, ~20 ms of every validate/plan whose addresses are all plain.
# tests/config/test_email_fast_path.py checks the copy against the library's list.
SPECIAL_USE_DOMAINS = ("arpa", "invalid", "local", "localhost", "onion")


def is_plain_email(value: str) -> bool:
    if not _PLAIN_EMAIL.match(value):
        return False
    domain = value.rsplit("@", 1)[1].lower()
    return not any(domain == d or domain.endswith("." + d) for d in SPECIAL_USE_DOMAINS)


@lru_cache(maxsize=65536)  # the same few addresses recur across thousands of resources
def _check_email(value: str) -> str:
    if is_plain_email(value):
        return value
    from email_validator import EmailNotValidError, validate_email

    try:
        validate_email(value, check_deliverability=False, test_environment=True)
    except EmailNotValidError as exc:
        raise PydanticCustomError(
            "email", "'{value}' is not a valid email address: {reason}",
            {"value": value, "reason": str(exc).rstrip(".")},
        ) from None
    return value


def _check_domain(value: str) -> str:
    if value.startswith("@"):
        raise PydanticCustomError(
            "domain", "'{value}': write the domain without '@'", {"value": value})
    return _check_host(value)


def delimiter_type(name: str, allowed: str, max_len: int) -> Any:
    """A string of 1..``max_len`` characters, each one of ``allowed``."""

    def check(value: str) -> str:
        if not value or len(value) > max_len or any(c not in allowed for c in value):
            raise PydanticCustomError(
                "delimiter", "{name} must be 1-{max_len} of the characters {chars}",
                {"name": name, "max_len": max_len, "chars": " ".join(allowed)})
        return value

    return Annotated[str, AfterValidator(check)]


def _strip(value: Any) -> Any:
    # str.strip returns the very same object when there is nothing to strip, so the
    # model shares the loaded string; StringConstraints(strip_whitespace) always
    # copies it (~240 bytes a resource, 43 MB of validating 180,000 resources)
    return value.strip() if isinstance(value, str) else value


# Outermost (last) in each Annotated, so it runs before the str check and the rest
Strip = BeforeValidator(_strip)

ResourceName = Annotated[str, AfterValidator(_check_name)]
Hostname = Annotated[str, AfterValidator(_check_host), Strip]
HttpUrl = Annotated[str, AfterValidator(_check_url)]
Email = Annotated[str, AfterValidator(_check_email), Strip]
Domain = Annotated[str, StringConstraints(to_lower=True), AfterValidator(_check_domain), Strip]
Port = Annotated[int, Field(ge=1, le=65535)]
NonEmptyStr = Annotated[str, StringConstraints(min_length=1), Strip]


def _check_header_text(value: str) -> str:
    # Text the composer puts in a header (a sender's display name): the same rule as
    # intake's (SPEC S1), so a config cannot smuggle a line break into every message.
    try:
        return check_header_text(value, "this text")
    except HeaderInjectionError as exc:
        raise PydanticCustomError("header_text", "{problem}", {"problem": str(exc)}) from None


HeaderText = Annotated[str, StringConstraints(min_length=1), AfterValidator(_check_header_text),
                       Strip]


class _SharedFieldsSet(set[str]):
    """The names of the fields a model was given: one object for every model given
    the same names (see :meth:`Model._share_fields_set`)."""

    __slots__ = ()


# One shared set per combination of written fields; a handful per kind in practice,
# the bound only keeps a pathological stream of combinations from growing it
_FIELDS_SETS: dict[frozenset[str], _SharedFieldsSet] = {}
_MAX_FIELDS_SETS = 4096


class Model(BaseModel):
    """Base for every spec fragment: camelCase keys, unknown keys rejected."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", validate_assignment=True,
        use_enum_values=True)

    @model_validator(mode="after")
    def _share_fields_set(self) -> Self:
        # pydantic keeps a set of the written field names per model: four or five a
        # resource, ~1.2 KB of its ~3 KB (bench/validate_memory.py), and the same
        # few sets over and over in a large repo
        fields = self.__pydantic_fields_set__
        key = frozenset(fields)
        shared = _FIELDS_SETS.get(key)
        if shared is None:
            if len(_FIELDS_SETS) >= _MAX_FIELDS_SETS:
                return self
            shared = _FIELDS_SETS[key] = _SharedFieldsSet(fields)
        object.__setattr__(self, "__pydantic_fields_set__", shared)
        return self

    def __setattr__(self, name: str, value: Any) -> None:
        self._own_fields_set()
        super().__setattr__(name, value)  # validates, and shares the new set again

    def __delattr__(self, name: str) -> None:
        self._own_fields_set()
        super().__delattr__(name)

    def _own_fields_set(self) -> None:
        fields = self.__pydantic_fields_set__
        if fields.__class__ is _SharedFieldsSet:
            # pydantic adds an assigned name to the set in place: to a shared set
            # that would mark the field written in every model sharing it
            object.__setattr__(self, "__pydantic_fields_set__", set(fields))


class Metadata(Model):
    name: ResourceName = Field(description="Unique name of the resource within its kind.")
    namespace: ResourceName = Field(
        default="default", description="MSP account / tenant the resource belongs to.")
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class Resource(Model):
    """The envelope: ``apiVersion``, ``kind``, ``metadata``, ``spec``."""

    KIND: ClassVar[str] = ""

    api_version: Literal["reconciler.dev/v1"] = Field(alias="apiVersion")
    kind: str
    metadata: Metadata
    spec: Any

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.kind, self.metadata.namespace, self.metadata.name)

    @property
    def display(self) -> str:
        return f"{self.kind}/{self.metadata.namespace}/{self.metadata.name}"


class MatchMode(StrEnum):
    ALL = "all"
    ANY = "any"


class Operator(StrEnum):
    EQUALS = "equals"
    NOT_EQUALS = "notEquals"
    IN = "in"
    NOT_IN = "notIn"
    CONTAINS = "contains"
    NOT_CONTAINS = "notContains"
    STARTS_WITH = "startsWith"
    ENDS_WITH = "endsWith"
    REGEX = "regex"


def _check_regex(value: str) -> str:
    try:
        re.compile(value)
    except re.error as exc:
        raise PydanticCustomError(
            "regex", "invalid regular expression: {reason}", {"reason": str(exc)}
        ) from None
    return value


class Condition(Model):
    """One test on a field: ``{field: department, operator: in, values: [HR, IT]}``.

    ``value`` is for single-value operators, ``values`` for ``in``/``notIn``.
    """

    field: NonEmptyStr
    operator: Operator = Operator.EQUALS
    value: str | None = None
    values: list[str] | None = None
    case_sensitive: StrictBool = False

    @model_validator(mode="after")
    def _operands(self) -> Condition:
        multi = self.operator in (Operator.IN, Operator.NOT_IN)
        if multi and not self.values:
            raise PydanticCustomError(
                "condition", "operator '{op}' needs `values` (a list)", {"op": self.operator})
        if not multi and self.value is None:
            raise PydanticCustomError(
                "condition", "operator '{op}' needs `value`", {"op": self.operator})
        if self.operator == Operator.REGEX and self.value is not None:
            _check_regex(self.value)
        return self
