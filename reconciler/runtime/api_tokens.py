"""Bearer tokens of the daemon's HTTP API (and the console's token login).

Each token stands for one :class:`~reconciler.runtime.access.Principal`: the roles
it holds and the namespaces it may see (SPEC S3). A bare ``--api-token-ref`` is an
admin of every namespace, as every token was before roles existed; the access
file (:mod:`reconciler.runtime.access_file`) gives roles and namespaces.

The settings hold secret *references* (``env:NAME``, ``file:/path``,
``enc:v1:...``); they are resolved once, when the API is built, so a token
that cannot be read stops the daemon at start-up instead of turning every
request into a 401 that nobody understands. Only SHA-256 digests of the
values are kept: a presented token is hashed and compared with each digest
in constant time, so neither the token's content nor its length leaks
through response timing, and no token value sits in the object for a
traceback or a debugger to show.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
from collections.abc import Sequence

from pydantic import ValidationError

from reconciler.config.secrets import SecretError, SecretRef, redact_ref, resolve_operator
from reconciler.runtime.access import Principal, Role, TokenSpec, full_access

# RFC 6750 b64token: what may follow "Bearer " in an Authorization header.
_B64TOKEN = re.compile(r"^[A-Za-z0-9\-._~+/]+=*$")
WEAK_TOKEN_LENGTH = 16

log = logging.getLogger(__name__)


class ApiTokenError(SecretError):
    """An API token reference is unusable; the daemon must not start.

    A :class:`SecretError`, so the CLI prints it as one plain line.
    """


def _describe(ref: str, index: int, count: int) -> str:
    return f"API token {index} of {count} ({redact_ref(ref)})"


def _resolve_one(ref: str, index: int, count: int) -> bytes:
    what = _describe(ref, index, count)
    try:
        SecretRef.model_validate({"secretRef": ref})
    except ValidationError:
        # The text is not echoed: a literal token pasted into the settings would be.
        raise ApiTokenError(
            f"API token {index} of {count} is not a secret reference; give env:NAME, "
            "file:/path or enc:v1:... (a literal token is refused). The daemon does not "
            "start without its API tokens."
        ) from None
    try:
        value = resolve_operator(ref)
    except SecretError as exc:
        raise ApiTokenError(
            f"{what} cannot be resolved: {exc}. The daemon does not start without its "
            "API tokens: fix the reference or remove it from the settings."
        ) from None
    value = value.strip()
    if not _B64TOKEN.match(value):
        # An empty token would match "Bearer " with nothing after it; other
        # characters cannot travel in the header, so the token could never match.
        raise ApiTokenError(
            f"{what} is empty or contains characters a bearer token cannot carry; use "
            "letters, digits and -._~+/ (e.g. the output of `openssl rand -hex 32`)."
        )
    if len(value) < WEAK_TOKEN_LENGTH:
        log.warning("%s is shorter than %d characters and easy to guess", what,
                    WEAK_TOKEN_LENGTH)
    return value.encode("ascii")


def _digest(value: bytes) -> bytes:
    return hashlib.sha256(value).digest()


def _principal(spec: TokenSpec) -> Principal:
    # Who a token is, for the audit of operator actions (O13): its name from the access
    # file, else its reference, printable (env/file names; ciphertext only fingerprinted).
    name = f"api token {spec.name or redact_ref(spec.secret_ref)}"
    if spec.name is None and spec.roles == (Role.ADMIN,) and spec.namespaces is None:
        return full_access(name)  # a bare --api-token-ref, as tokens were before roles
    return Principal.of(name, spec.roles, spec.namespaces)


class BearerTokens:
    """The accepted tokens, resolved from their references at construction.

    ``refs`` are bare references (admin, every namespace); ``specs`` carry roles and
    namespaces. Their principals are built here, once: identifying a request
    allocates nothing but the digest of what it presented.
    """

    def __init__(self, refs: Sequence[str], specs: Sequence[TokenSpec] = ()) -> None:
        every = [*(TokenSpec(ref) for ref in refs), *specs]
        count = len(every)
        self._digests = tuple(_digest(_resolve_one(spec.secret_ref, i, count))
                              for i, spec in enumerate(every, start=1))
        self._principals = tuple(_principal(spec) for spec in every)

    def __len__(self) -> int:
        return len(self._digests)

    def __repr__(self) -> str:
        return f"BearerTokens({len(self._digests)} tokens)"

    def knows(self, principal: Principal) -> bool:
        """Whether ``principal`` (from a console session signed in by token) is still
        one of these tokens, with the same roles and namespaces."""
        return principal in self._principals

    def identify(self, presented: str) -> Principal | None:
        """Who the token ``presented`` is, or None when it is none of them.

        Every digest is compared (no early exit), so the time taken does not
        tell which token, or whether any, was close.
        """
        try:
            given = _digest(presented.encode("ascii"))
        except UnicodeEncodeError:
            return None
        found = None
        for digest, principal in zip(self._digests, self._principals, strict=True):
            if hmac.compare_digest(given, digest):
                found = principal
        return found
