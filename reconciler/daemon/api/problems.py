"""422 answers that name the field and say what is wrong, without echoing input.

FastAPI's default validation answer repeats the submitted value (``input``),
which for a notification can be a whole body; ours keeps the location, a
readable field path and the message only. The intake body and query
parameters get the same shape.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from reconciler.daemon.api.refusals import invalid_fields_reason, refuse

_SOURCES = ("body", "query", "path", "header", "cookie")

# Descriptions for the intake body's fields in the OpenAPI document (the
# model in dispatch.envelope carries few of its own).
NOTIFICATION_FIELDS = {
    "module": "Desk module that raised it (requests, problems, changes, ...); picks the "
              "outgoing rules.",
    "namespace": "Tenant / MSP account; must be configured in the live config.",
    "context": "Fields the outgoing rules test: department, technicianGroup, site, ...",
    "to": 'Recipients: "jane@example.com", "Jane Doe <jane@example.com>" or '
          '{"email", "name"}. Empty lists are accepted and audited as not sent (O8).',
    "cc": "Copy recipients, same forms as `to`.",
    "bcc": "Blind copies: in the envelope only, never in a header.",
    "subject": "No line breaks or control characters (header injection is refused).",
    "textBody": "Plain-text body.",
    "htmlBody": "HTML body.",
    "attachments": "Files with base64 `data`; ones over the server's limit are dropped and "
                   "named in the 202 answer and the audit, or refused with 422 when the "
                   "server's `attachments.oversize` is `refuse` (O4).",
    "headers": "Extra headers such as In-Reply-To / References; not the ones the "
               "dispatcher sets.",
    "idempotencyKey": "Per namespace: a resubmission with the same key stores nothing new "
                      "and answers with the first id.",
}


def _path(loc: Sequence[str | int]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def field_problem(loc: Sequence[str | int], msg: str, type_: str) -> dict[str, Any]:
    where = list(loc)
    inner = where[1:] if where and where[0] in _SOURCES else where
    return {"loc": where, "field": _path(inner) or (str(where[0]) if where else ""),
            "msg": msg, "type": type_}


def field_problems(
    errors: Iterable[Mapping[str, Any]], prefix: Sequence[str | int] = ()
) -> list[dict[str, Any]]:
    """pydantic/FastAPI error dicts as our problem entries (``input`` left out)."""
    out = []
    for error in errors:
        msg = str(error.get("msg", "invalid"))
        # pydantic prefixes the message of a ValueError raised by a validator
        msg = msg.removeprefix("Value error, ").removeprefix("Assertion failed, ")
        out.append(field_problem([*prefix, *error.get("loc", ())], msg,
                                 str(error.get("type", "value_error"))))
    return out


async def validation_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = field_problems(exc.errors())
    refuse(request.scope, invalid_fields_reason(problems))
    return JSONResponse({"detail": problems}, status_code=422)
