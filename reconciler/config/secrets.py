"""Secret references (SPEC C5).

A secret field in YAML never holds the secret itself, only where to get it:

- ``{secretRef: env:SMTP_PASSWORD}``  an environment variable of the daemon
- ``{secretRef: file:/run/secrets/smtp}``  a file (trailing newline stripped)
- ``{secretRef: enc:v1:gAAAA...}``  a value encrypted with the repo's key
  (``reconcile secret encrypt``, sealed by :mod:`reconciler.config.sealing`); the
  key comes from ``RECONCILE_SECRET_KEY`` or the file named by
  ``RECONCILE_SECRET_KEY_FILE``.

References from the config are resolved only by the components that talk to
mail servers (:func:`resolve`), and ``env:``/``file:`` ones only in the places
the operator allows (SPEC S2, :mod:`reconciler.config.secret_places`); the
operator's own references (API tokens, token key) go through
:func:`resolve_operator`. Everything else renders them through :func:`redact`,
which shows which reference changed without ever showing a value.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

from reconciler.config import secret_places
from reconciler.config.positions import YamlPath
from reconciler.config.sealing import SealError, seal, unseal

ENV_KEY = "RECONCILE_SECRET_KEY"
ENV_KEY_FILE = "RECONCILE_SECRET_KEY_FILE"
ENC_PREFIX = "enc:v1:"

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_FERNET_TOKEN = re.compile(r"^[A-Za-z0-9_\-]+=*$")

FIX_HINT = ("write {secretRef: env:NAME} (environment variable), {secretRef: file:/path} "
            "or {secretRef: enc:v1:...} from `reconcile secret encrypt`")


class SecretError(Exception):
    """A reference that cannot be resolved; the message never contains a secret."""


# scheme -> (is the rest well formed?, what to say when not); the reference itself is never
# echoed: it may be a secret pasted in by mistake.
_REFERENCE_CHECKS: dict[str, tuple[Callable[[str], object], str]] = {
    "env:": (_ENV_NAME.match, "env: reference needs a variable name of letters, digits and "
                              "'_', e.g. env:SMTP_PASSWORD"),
    "file:": (str.strip, "file: reference needs a path"),
    ENC_PREFIX: (_FERNET_TOKEN.match, "enc:v1: reference is not a valid encrypted value; "
                                      "re-create it with `reconcile secret encrypt`"),
}


def _check_reference(ref: str) -> str:
    for prefix, (well_formed, problem) in _REFERENCE_CHECKS.items():
        if ref.startswith(prefix):
            if not well_formed(ref[len(prefix) :]):
                raise PydanticCustomError("secret_ref", problem, {})
            return ref
    raise PydanticCustomError(
        "secret_ref", "unknown secret reference scheme; use env:NAME, file:/path or enc:v1:...", {})


class SecretRef(BaseModel):
    """A pointer to a secret. Its ``repr``/``str`` are redacted."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    secret_ref: str = Field(
        alias="secretRef",
        json_schema_extra={
            "pattern": r"^(env:[A-Za-z_][A-Za-z0-9_]*|file:.+|enc:v1:[A-Za-z0-9_\-]+=*)$"
        },
        description="env:NAME, file:/path or enc:v1:... (never the secret itself)")

    @model_validator(mode="before")
    @classmethod
    def _no_literals(cls, value: Any) -> Any:
        if isinstance(value, str | int | float | bytes):
            # Never echo the value: it is very likely a real secret.
            raise PydanticCustomError("literal_secret", "a literal secret is not allowed here", {})
        if isinstance(value, dict) and isinstance(value.get("secretRef"), str):
            _check_reference(value["secretRef"])
        return value

    @property
    def scheme(self) -> str:
        return self.secret_ref.split(":", 1)[0]

    def __repr__(self) -> str:
        return f"SecretRef({redact_ref(self.secret_ref)})"

    __str__ = __repr__


def redact_ref(ref: str) -> str:
    """The printable form of a reference: env/file names shown, ciphertext fingerprinted."""
    if ref.startswith(ENC_PREFIX):
        digest = hashlib.sha256(ref.encode()).hexdigest()[:8]
        return f"enc:v1:***{digest}"
    if ref.startswith(("env:", "file:")):
        return ref
    return "***"


def redact(value: Any) -> Any:
    """Deep copy of a JSON-like value with every secret reference made printable.

    This is the one place any component turns spec data containing secrets
    into something it may show (plans, history, logs, errors).
    """
    if isinstance(value, SecretRef):
        return {"secretRef": redact_ref(value.secret_ref)}
    if isinstance(value, dict):
        if set(value) == {"secretRef"} and isinstance(value["secretRef"], str):
            return {"secretRef": redact_ref(value["secretRef"])}
        return {k: redact(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    return value


def iter_refs(value: Any, path: YamlPath = ()) -> Iterator[tuple[YamlPath, str]]:
    """(path, reference) for every secret reference in JSON-like data, e.g. a
    loaded YAML document; ``reconcile secret check`` resolves each one."""
    if isinstance(value, SecretRef):
        yield path, value.secret_ref
    elif isinstance(value, dict):
        if isinstance(value.get("secretRef"), str):
            yield path, value["secretRef"]
            return
        for key, item in value.items():
            yield from iter_refs(item, (*path, key))
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            yield from iter_refs(item, (*path, index))


def _load_key() -> bytes:
    key = os.environ.get(ENV_KEY)
    if key:
        return key.encode()
    key_file = os.environ.get(ENV_KEY_FILE)
    if key_file:
        try:
            return Path(key_file).read_bytes().strip()
        except OSError as exc:
            raise SecretError(f"cannot read {ENV_KEY_FILE} ({key_file}): {exc.strerror}") from None
    raise SecretError(
        f"encrypted secret needs a key: set {ENV_KEY} or {ENV_KEY_FILE} "
        "(create one with `reconcile secret keygen`)")


def encrypt(plaintext: str, key: bytes | None = None) -> str:
    try:
        return ENC_PREFIX + seal(key or _load_key(), plaintext)
    except SealError:
        # Sealing's message is about the key's format; it never contains the key.
        raise SecretError(f"the key in {ENV_KEY} / {ENV_KEY_FILE} is not a valid key; "
                          "create one with `reconcile secret keygen`") from None


def resolve(ref: SecretRef | str) -> str:
    """The value of a reference from the config. Only transports and token providers
    call this. ``env:``/``file:`` references resolve only in the places the operator
    allows (:mod:`reconciler.config.secret_places`); anything else is refused before
    a variable or file is read."""
    raw = ref.secret_ref if isinstance(ref, SecretRef) else ref
    if raw.startswith(("env:", "file:")):
        try:
            places = secret_places.current()
            if raw.startswith("env:"):
                places.env_name(raw[4:])
            else:
                return _read_file(raw[5:], places.file_path(raw[5:]), follow=False)
        except (secret_places.PlaceRefused, secret_places.PlacesSettingError) as exc:
            raise SecretError(str(exc)) from None
    return _resolve_anywhere(raw)


def resolve_operator(ref: str) -> str:
    """The value of a reference the operator gave this process (API tokens, the token
    cache key, webhook settings): not confined, and from now on never resolvable by a
    config reference in this process."""
    secret_places.reserve(ref)
    return _resolve_anywhere(ref)


def _read_file(shown: str, path: str, *, follow: bool = True) -> str:
    try:
        # follow=False for a canonicalised path: a symlink there now was put there since
        # the containment check, and must not lead the read elsewhere.
        fd = os.open(path, os.O_RDONLY | (0 if follow else os.O_NOFOLLOW))
        with os.fdopen(fd, encoding="utf-8") as handle:
            return handle.read().rstrip("\r\n")
    except OSError as exc:
        raise SecretError(f"cannot read secret file {shown}: {exc.strerror}") from None


def _resolve_anywhere(raw: str) -> str:
    if raw.startswith("env:"):
        name = raw[4:]
        if name not in os.environ:
            raise SecretError(f"environment variable {name} is not set")
        return os.environ[name]
    if raw.startswith("file:"):
        return _read_file(raw[5:], raw[5:])
    if raw.startswith(ENC_PREFIX):
        try:
            return unseal(_load_key(), raw[len(ENC_PREFIX) :]).decode()
        except SealError:
            raise SecretError(
                f"cannot decrypt {redact_ref(raw)}: wrong key or damaged value"
            ) from None
    raise SecretError(f"unsupported secret reference {redact_ref(raw)}")
