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
    console:                       # reconcile daemon --console-* (docs/console.md)
      enabled: true
      sessionKeyRef: env:CONSOLE_SESSION_KEY
    oidc:                          # reconcile daemon --console-oidc-*
      issuer: https://login.example.com
      clientId: reconcile-console
      roles: {desk-ops: operator}

Operator settings, like the command line: never part of the config repository.
Read with the config's YAML loader, so a mistake is reported as the config's are:
``file:line:col``, the field's path, what is wrong and how to fix it. A top-level
section this module does not know is an error. ``console:`` and ``oidc:`` hold the
same settings as the daemon's ``--console*`` options (:meth:`AccessFile.console_settings`);
an option given on the command line wins over the file.
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
        return _reference(value)

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


def _reference(value: Any) -> str:
    # SecretRef's own check refuses a literal secret without echoing it.
    return SecretRef.model_validate({"secretRef": value}).secret_ref


class ConsoleSection(_Model):
    """``console:``: the daemon's ``--console``, ``--console-session-*`` and
    ``--console-public-url``."""

    enabled: bool | None = Field(default=None, description="Serve the console (--console).")
    session_key_ref: str | None = Field(default=None, alias="sessionKeyRef")
    session_hours: float | None = Field(default=None, alias="sessionHours", ge=0.01)
    public_url: str | None = Field(default=None, alias="publicUrl", min_length=1)

    @field_validator("session_key_ref", mode="before")
    @classmethod
    def _key(cls, value: Any) -> str | None:
        return None if value is None else _reference(value)

    def settings(self) -> dict[str, Any]:
        return _given({"console": self.enabled,
                       "console_session_key_ref": self.session_key_ref,
                       "console_session_hours": self.session_hours,
                       "console_public_url": self.public_url})


class OidcSection(_Model):
    """``oidc:``: the daemon's ``--console-oidc-*`` options."""

    issuer: str | None = Field(default=None, min_length=1)
    client_id: str | None = Field(default=None, alias="clientId", min_length=1)
    client_secret_ref: str | None = Field(default=None, alias="clientSecretRef")
    scopes: list[str] | None = Field(default=None, min_length=1)
    name_claim: str | None = Field(default=None, alias="nameClaim", min_length=1)
    roles_claim: str | None = Field(default=None, alias="rolesClaim", min_length=1)
    namespaces_claim: str | None = Field(default=None, alias="namespacesClaim", min_length=1)
    roles: dict[str, Role] | None = Field(
        default=None, description="Roles-claim value -> role, e.g. {desk-ops: operator}.")
    label: str | None = Field(default=None, min_length=1)

    @field_validator("client_secret_ref", mode="before")
    @classmethod
    def _secret(cls, value: Any) -> str | None:
        return None if value is None else _reference(value)

    @field_validator("roles")
    @classmethod
    def _values(cls, value: dict[str, Role] | None) -> dict[str, Role] | None:
        if value is not None and any(not k.strip() or "=" in k for k in value):
            raise ValueError("a roles-claim value cannot be empty or contain '='")
        return value

    def settings(self) -> dict[str, Any]:
        return _given({
            "console_oidc_issuer": self.issuer,
            "console_oidc_client_id": self.client_id,
            "console_oidc_client_secret_ref": self.client_secret_ref,
            "console_oidc_scopes": None if self.scopes is None else tuple(self.scopes),
            "console_oidc_name_claim": self.name_claim,
            "console_oidc_roles_claim": self.roles_claim,
            "console_oidc_namespaces_claim": self.namespaces_claim,
            "console_oidc_role_map": None if self.roles is None else tuple(
                f"{value}={role.value}" for value, role in self.roles.items()),
            "console_oidc_label": self.label,
        })


def _given(fields: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if v is not None}


class AccessFile(_Model):
    tokens: list[TokenEntry] = Field(default_factory=list)
    metrics: MetricsAccess | None = None
    console: ConsoleSection | None = None
    oidc: OidcSection | None = None

    def console_settings(self) -> dict[str, Any]:
        """The ``DaemonSettings`` fields the console sections give (only those set)."""
        return {**(self.console.settings() if self.console else {}),
                **(self.oidc.settings() if self.oidc else {})}


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
                              "`tokens:` (and optionally `metrics:`, `console:`, `oidc:`); "
                              "see docs/access.md")
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
