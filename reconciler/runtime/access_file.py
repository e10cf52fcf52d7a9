"""The daemon's access file (``reconcile daemon --access-file access.yaml``, SPEC S3).

Which API tokens exist, the role each holds and the namespaces it is limited to,
and whether ``/metrics`` needs a token::

    tokens:
      - name: acme-desk            # printable; goes into the audit of actions
        secretRef: env:ACME_DESK_TOKEN
        role: sender               # or a list: [sender, viewer]
        namespaces: [acme]         # leave out for every namespace
    metrics:
      requireToken: true

Operator settings, like the command line: never part of the config repository.
Read with the config's YAML loader, so a mistake is reported as the config's are:
``file:line:col``, the field's path, what is wrong and how to fix it. A top-level
section this module does not know is an error, except the console's (``console:``,
``oidc:``), which are kept unread for the console to read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from reconciler.config.diagnostics import Diagnostic, Diagnostics
from reconciler.config.errors import diagnostics_from
from reconciler.config.loader import Document, diagnostic_at, load_text
from reconciler.config.secrets import SecretRef
from reconciler.config.yaml_errors import decode_file
from reconciler.runtime.access import Role, TokenSpec


class AccessFileError(Exception):
    """The access file cannot be used; the message has one line per problem."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class TokenEntry(_Model):
    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.@-]*$",
                      description="Printable name: goes into the audit of operator actions.")
    secret_ref: str = Field(alias="secretRef",
                            description="env:NAME, file:/path or enc:v1:... of the token.")
    role: list[Role] = Field(min_length=1, description="One role or a list of roles.")
    namespaces: list[str] | None = Field(
        default=None, min_length=1,
        description="The namespaces this token may see; leave out for all.")

    @field_validator("secret_ref", mode="before")
    @classmethod
    def _reference(cls, value: Any) -> str:
        # SecretRef's own check refuses a literal token without echoing it.
        return SecretRef.model_validate({"secretRef": value}).secret_ref

    @field_validator("role", mode="before")
    @classmethod
    def _one_or_more(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("namespaces")
    @classmethod
    def _names(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and any(not ns.strip() for ns in value):
            raise ValueError("a namespace name cannot be empty")
        return value

    def spec(self) -> TokenSpec:
        return TokenSpec(self.secret_ref, tuple(dict.fromkeys(self.role)),
                         None if self.namespaces is None else tuple(self.namespaces),
                         self.name)


class MetricsAccess(_Model):
    require_token: bool = Field(alias="requireToken",
                                description="Whether /metrics needs a viewer token.")


class AccessFile(_Model):
    tokens: list[TokenEntry] = Field(default_factory=list)
    metrics: MetricsAccess | None = None
    console: dict[str, Any] | None = None  # the console's section, read by the console
    oidc: dict[str, Any] | None = None  # likewise


def load_access_file(path: str | Path) -> AccessFile:
    """The access file at ``path``; :class:`AccessFileError` naming each problem."""
    file = str(path)
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise AccessFileError(f"{file}: cannot read the access file: {exc.strerror}") from None
    text = decode_file(data, file)
    if isinstance(text, Diagnostic):
        raise AccessFileError(_lines([text]))
    found = Diagnostics()
    documents = load_text(text, file, found)
    if found.has_errors:
        raise AccessFileError(_lines(found.errors))
    if len(documents) != 1 or not isinstance(documents[0].data, dict):
        raise AccessFileError(f"{file}: the access file must be one YAML mapping with "
                              "`tokens:` (and optionally `metrics:`); see docs/access.md")
    document = documents[0]
    try:
        parsed = AccessFile.model_validate(document.data)
    except ValidationError as exc:
        raise AccessFileError(_lines(diagnostics_from(exc, document, AccessFile))) from None
    _check_unique(document, parsed)
    return parsed


def _check_unique(document: Document, parsed: AccessFile) -> None:
    seen: dict[str, int] = {}
    problems = []
    for i, entry in enumerate(parsed.tokens):
        if entry.name in seen:
            problems.append(diagnostic_at(
                document, ("tokens", i, "name"), "duplicate-token-name",
                f"token name {entry.name!r} is already used by tokens[{seen[entry.name]}]",
                hint="give each token its own name: the audit tells them apart by it"))
        seen.setdefault(entry.name, i)
    if problems:
        raise AccessFileError(_lines(problems))


def _lines(diagnostics: list[Diagnostic]) -> str:
    out = []
    for d in diagnostics:
        where = f"{d.location}: {d.path}: " if d.path else f"{d.location}: "
        out.append(f"{where}{d.message}" + (f" ({d.hint})" if d.hint else ""))
    return "\n".join(out)
