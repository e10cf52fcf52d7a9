"""What the API's path, query and small body parameters accept, stated so that the
OpenAPI document and the answers agree.

Every id and offset the store holds is a 64-bit signed integer (BigInteger on
PostgreSQL, INTEGER on SQLite). A larger number used to reach the driver and
fail there: a 500 on SQLite (the driver cannot bind it), a 503 on PostgreSQL
(the server refuses it, which reads as the store being down). Bounding the
parameters turns that client mistake into a 422 naming the parameter, and the
bound appears in the document as ``maximum``.

Times are ISO 8601, as the parameters have always been documented. pydantic
would also take a bare number as Unix seconds, so ``until=0.5`` meant 1970;
a number is refused instead of being read as a date nobody meant. A time whose
offset carries it outside years 1-9999 once converted to UTC is refused too
(converting it used to fail inside the store).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

from fastapi.exceptions import RequestValidationError
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ValidationError,
    WithJsonSchema,
)

# The largest value a 64-bit signed integer column holds, in either store.
ROW_ID_MAX = 2**63 - 1

_NUMBER = re.compile(r"\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*")
_TIME_EXAMPLE = "e.g. 2026-01-31T12:00:00Z, 2026-01-31T13:00:00+01:00 or 2026-01-31"


def _not_a_number(value: Any) -> Any:
    if isinstance(value, str) and _NUMBER.fullmatch(value):
        raise ValueError(f"give an ISO 8601 date or date-time ({_TIME_EXAMPLE}), "
                         "not a number")
    return value


def _in_utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)  # documented: a time without a zone is UTC
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("this time is outside the years 1-9999 once converted to UTC; "
                         f"give one inside them ({_TIME_EXAMPLE})") from None


UtcTime = Annotated[
    datetime,
    BeforeValidator(_not_a_number),
    AfterValidator(_in_utc),
    WithJsonSchema({"anyOf": [{"type": "string", "format": "date-time"},
                              {"type": "string", "format": "date"}]}),
]
"""An ISO 8601 date-time (a zone optional, UTC without one) or a date (its midnight
in UTC); always aware and in UTC once validated."""


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain a NUL character (\\u0000)")
    return value


SearchText = Annotated[str, AfterValidator(_no_nul),
                       WithJsonSchema({"type": "string", "pattern": "^[^\\u0000]*$"})]
"""Text a query compares with stored text. PostgreSQL text cannot hold NUL, so a
filter with one failed in the database (a 503) instead of being refused."""


def _number_not_text(value: Any) -> Any:
    # pydantic's lax mode reads "5" and true as integers; JSON Schema does not
    # (while 5.0 is an integer to both, and stays accepted).
    if isinstance(value, bool | str):
        raise ValueError("must be a JSON number without a fraction, e.g. 42")
    return value


JsonInt = Annotated[int, BeforeValidator(_number_not_text)]
"""An integer in a JSON body, as JSON Schema's ``integer`` means it."""


M = TypeVar("M", bound=BaseModel)


def json_body(model: type[M], body: bytes) -> M:
    """A body read by its route (after the token check) as ``model``; 422 naming the
    fields (or ``json_invalid``) as intake answers for its body."""
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        raise RequestValidationError(
            [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]
        ) from None
