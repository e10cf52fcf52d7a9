"""CEL semantics over plain JSON values (None, bool, int, float, str, list, dict).

The policy engine evaluates resources as the JSON that pydantic dumps, so
working on those Python values directly (instead of wrapping every value in
cel-python's ``celtypes``) is what makes policies cheap enough to run on
every resource. These functions implement the CEL rules that differ from
Python's: ``true != 1``, strings never equal numbers, integer division
truncates, 64-bit overflow is an error, and so on.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Mapping
from functools import lru_cache
from string import ascii_lowercase, ascii_uppercase
from typing import Any

import re2

INT_MIN = -(2**63)
INT_MAX = 2**63 - 1
NUMBER_TYPES = (int, float)

# A compiled expression: the activation (variable name -> JSON value) in, a value out.
Activation = Mapping[str, Any]
Node = Callable[[Activation], Any]


class CelError(Exception):
    """A CEL evaluation error (missing key, wrong type, ...); never a crash."""


def type_name(value: Any) -> str:
    if value is None:
        return "null"
    return _TYPE_NAMES.get(type(value), type(value).__name__)


_TYPE_NAMES: dict[type, str] = {
    bool: "bool",
    int: "int",
    float: "double",
    str: "string",
    list: "list",
    dict: "map",
}


def no_overload(op: str, *args: Any) -> CelError:
    types = ", ".join(type_name(a) for a in args)
    return CelError(f"{op} cannot be applied to ({types})")


def check_int(value: int) -> int:
    if value < INT_MIN or value > INT_MAX:
        raise CelError("integer overflow")
    return value


def equals(a: Any, b: Any) -> bool:
    """CEL ``==``: values of different types are unequal, except int vs double."""
    ta, tb = type(a), type(b)
    if ta is tb:
        if ta is list:
            return len(a) == len(b) and all(equals(x, y) for x, y in zip(a, b, strict=True))
        if ta is dict:
            return a.keys() == b.keys() and all(equals(v, b[k]) for k, v in a.items())
        return bool(a == b)
    if ta in NUMBER_TYPES and tb in NUMBER_TYPES:
        return bool(a == b)
    return False


def _comparable(a: Any, b: Any) -> bool:
    ta, tb = type(a), type(b)
    if ta in NUMBER_TYPES and tb in NUMBER_TYPES:
        return True
    return ta is tb and ta in (str, bool)


def _ordering(op: str, compare: Callable[[Any, Any], bool]) -> Callable[[Any, Any], bool]:
    def ordered(a: Any, b: Any) -> bool:
        if _comparable(a, b):
            return bool(compare(a, b))
        raise no_overload(op, a, b)

    return ordered


less = _ordering("<", operator.lt)
less_equal = _ordering("<=", operator.le)
greater = _ordering(">", operator.gt)
greater_equal = _ordering(">=", operator.ge)


def contained(item: Any, container: Any) -> bool:
    """CEL ``item in container``: list membership or map key presence."""
    t = type(container)
    if t is list:
        return any(equals(item, x) for x in container)
    if t is dict:
        try:
            return item in container
        except TypeError:
            return False
    raise no_overload("in", item, container)


def _arithmetic(op: str, compute: Callable[[Any, Any], Any],
                others: tuple[type, ...]) -> Callable[[Any, Any], Any]:
    """``op`` on two ints (64-bit checked) or two values of one of ``others``."""
    def arithmetic(a: Any, b: Any) -> Any:
        ta = type(a)
        if ta is type(b):
            if ta is int:
                return check_int(compute(a, b))
            if ta in others:
                return compute(a, b)
        raise no_overload(op, a, b)

    return arithmetic


add = _arithmetic("+", operator.add, (float, str, list))
subtract = _arithmetic("-", operator.sub, (float,))
multiply = _arithmetic("*", operator.mul, (float,))


def _int_quotient(a: int, b: int) -> int:
    # CEL truncates towards zero, Python's // floors.
    q = abs(a) // abs(b)
    return -q if (a < 0) != (b < 0) else q


def divide(a: Any, b: Any) -> Any:
    ta = type(a)
    if ta is type(b):
        if ta is int:
            if b == 0:
                raise CelError("division by zero")
            return check_int(_int_quotient(a, b))
        if ta is float:
            if b == 0:
                if a == 0 or math.isnan(a):
                    return math.nan
                return math.copysign(math.inf, a) * math.copysign(1.0, b)
            return a / b
    raise no_overload("/", a, b)


def modulo(a: Any, b: Any) -> Any:
    if type(a) is int and type(b) is int:
        if b == 0:
            raise CelError("modulus by zero")
        return a - b * _int_quotient(a, b)
    raise no_overload("%", a, b)


def negate(a: Any) -> Any:
    t = type(a)
    if t is int:
        return check_int(-a)
    if t is float:
        return -a
    raise no_overload("-", a)


def logical_not(a: Any) -> bool:
    if a is True:
        return False
    if a is False:
        return True
    raise no_overload("!", a)


def select(obj: Any, name: str, where: str) -> Any:
    """``obj.name``; ``where`` is the source text of ``obj`` for the error message."""
    if type(obj) is dict:
        try:
            return obj[name]
        except KeyError:
            raise CelError(f"{where} has no key {name!r}") from None
    raise CelError(f"cannot read .{name} of {where}: it is {type_name(obj)}, not a map")


def index(obj: Any, key: Any, where: str) -> Any:
    t = type(obj)
    if t is list:
        if type(key) is not int:
            raise no_overload("[]", obj, key)
        if not 0 <= key < len(obj):
            raise CelError(f"{where}[{key}] is out of range (size {len(obj)})")
        return obj[key]
    if t is dict:
        try:
            return obj[key]
        except (KeyError, TypeError):
            raise CelError(f"{where} has no key {key!r}") from None
    raise no_overload("[]", obj, key)


def size(value: Any) -> int:
    if type(value) in (str, list, dict):
        return len(value)
    raise no_overload("size", value)


@lru_cache(maxsize=256)
def _regex(pattern: str) -> Any:
    try:
        return re2.compile(pattern)
    except re2.error as exc:
        raise CelError(f"invalid regular expression {pattern!r}: {exc}") from None


def matches(text: Any, pattern: Any) -> bool:
    # RE2, like cel-python and the CEL spec: no backtracking blow-ups from user patterns.
    if type(text) is str and type(pattern) is str:
        return _regex(pattern).search(text) is not None
    raise no_overload("matches", text, pattern)


def _string_method(name: str, op: Any) -> Any:
    def method(text: Any, arg: Any) -> bool:
        if type(text) is str and type(arg) is str:
            return bool(op(text, arg))
        raise no_overload(name, text, arg)

    return method


def contains(container: Any, item: Any) -> bool:
    if type(container) is str:
        if type(item) is str:
            return item in container
        raise no_overload("contains", container, item)
    return contained(item, container)


def to_int(value: Any) -> int:
    t = type(value)
    if t is int:
        return value
    if t is float:
        if math.isnan(value) or math.isinf(value):
            raise CelError(f"cannot convert {value} to int")
        return check_int(int(value))
    if t is str:
        try:
            return check_int(int(value, 10))
        except ValueError:
            raise CelError(f"cannot convert {value!r} to int") from None
    raise no_overload("int", value)


def to_double(value: Any) -> float:
    t = type(value)
    if t is float:
        return value
    if t is int:
        return float(value)
    if t is str:
        try:
            return float(value)
        except ValueError:
            raise CelError(f"cannot convert {value!r} to double") from None
    raise no_overload("double", value)


def to_string(value: Any) -> str:
    t = type(value)
    if t is str:
        return value
    if t is bool:
        return "true" if value else "false"
    if t in NUMBER_TYPES:
        return str(value)
    raise no_overload("string", value)


def _ascii_case(name: str, table: dict[int, int]) -> Callable[[Any], str]:
    # ASCII only, as in CEL's strings extension: "İ".lower() would change length.
    def convert(value: Any) -> str:
        if type(value) is str:
            return value.translate(table)
        raise no_overload(name, value)

    return convert


lower_ascii = _ascii_case("lowerAscii", str.maketrans(ascii_uppercase, ascii_lowercase))
upper_ascii = _ascii_case("upperAscii", str.maketrans(ascii_lowercase, ascii_uppercase))


# Functions callable both as ``f(x, ...)`` and as methods ``x.f(...)``; the
# receiver of a method call is the first argument. The policy helpers in
# ``reconciler.policy.functions`` are added to this table by the compiler.
BUILTINS: dict[str, Any] = {
    "size": size,
    "matches": matches,
    "startsWith": _string_method("startsWith", str.startswith),
    "endsWith": _string_method("endsWith", str.endswith),
    "contains": contains,
    "int": to_int,
    "double": to_double,
    "string": to_string,
    "lowerAscii": lower_ascii,
    "upperAscii": upper_ascii,
}
