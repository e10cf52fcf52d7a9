"""pydantic validation errors of policy documents -> positioned, plain-words diagnostics.

The wording is the resource pipeline's (``reconciler.config.errors``), so a
policy file reads like any other config file; this adds the CEL caret hint
and drops the second alternative of ``path: str | list[str]`` errors.
"""

from __future__ import annotations

from dataclasses import replace

from pydantic import BaseModel, ValidationError

from reconciler.config.diagnostics import Diagnostic
from reconciler.config.errors import diagnostics_from
from reconciler.config.loader import Document

# Error types that only say "the other alternative of a union did not fit either".
_ALTERNATIVE = frozenset({"schema:list_type", "schema:string_type"})


def validation_diagnostics(document: Document, error: ValidationError,
                           model: type[BaseModel]) -> list[Diagnostic]:
    details = error.errors(include_url=False)
    result = diagnostics_from(error, document, model)
    hints = [str((d.get("ctx") or {}).get("hint") or "") for d in details]
    if len(hints) == len(result):  # one diagnostic per pydantic error, in order
        result = [d if d.hint or not hint else replace(d, hint=hint)
                  for d, hint in zip(result, hints, strict=True)]
    specific = {d.path for d in result if d.code not in _ALTERNATIVE}
    return [d for d in result if d.code not in _ALTERNATIVE or d.path not in specific]

