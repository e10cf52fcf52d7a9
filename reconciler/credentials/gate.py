"""The one check before a credential leaves the process (SPEC S2).

Every place that presents a credential — a password in SMTP AUTH, IMAP LOGIN or
an EWS request, an access token in XOAUTH2 or a Graph/EWS call, a client secret
or refresh token at a token URL, a proxy password — asks :func:`require` (or
:func:`present_secret`, which also resolves the reference) with the endpoint it
is about to talk to. The answer comes from the bindings an apply wrote, loaded
from the store whenever the process loads a new live revision
(:func:`load`), so an out-of-band ``live set`` of a host or a direct edit of the
store cannot send a credential anywhere an apply did not bind it.

Until bindings are loaded, nothing is presented: a process that never read the
store has no business presenting credentials.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from reconciler.config.endpoints import (
    Pair,
    display,
    host_endpoint,
    oauth_credential,
    secret_credential,
    token_endpoint,
)
from reconciler.config.secrets import SecretError, SecretRef, resolve

if TYPE_CHECKING:
    from reconciler.config.models.auth import OAuth2Auth

log = logging.getLogger(__name__)

FIX = ("If the new endpoint is intended, apply the change with "
       "`reconcile apply ... --approve-credential-move KIND/NAME`; otherwise set the "
       "server back to the endpoint it was applied with.")


class CredentialNotBound(SecretError):
    """The credential was not applied for this endpoint; nothing was presented.

    A SecretError, so every caller that already turns an unreadable secret into a
    permanent configuration failure does the same here.
    """

    def __init__(self, credential: str, endpoint: str, bound_to: tuple[str, ...]) -> None:
        self.credential = credential
        self.endpoint = endpoint
        self.bound_to = bound_to
        where = ", ".join(bound_to) if bound_to else "no endpoint"
        super().__init__(
            f"credential {display(credential)} is not bound to {endpoint} (it was applied "
            f"for {where}), so it was not sent there. {FIX}"
        )


class BindingSource(Protocol):
    def credential_bindings(self) -> frozenset[Pair]: ...


@dataclass(frozen=True)
class Bindings:
    """The (credential, endpoint) pairs the store's apply revisions bound."""

    pairs: frozenset[Pair]

    def allows(self, credential: str, endpoint: str) -> bool:
        return (credential, endpoint) in self.pairs

    def bound_to(self, credential: str) -> tuple[str, ...]:
        return tuple(sorted(e for c, e in self.pairs if c == credential))


_current: Bindings | None = None


def install(bindings: Bindings | None) -> None:
    """Make ``bindings`` the ones every later check uses (None: present nothing)."""
    global _current
    _current = bindings


def current() -> Bindings | None:
    return _current


def load(store: BindingSource) -> Bindings:
    """Read the store's bindings and use them from now on."""
    bindings = Bindings(store.credential_bindings())
    install(bindings)
    return bindings


def require(credential: str, endpoint: str) -> None:
    """Raise CredentialNotBound unless ``credential`` may be presented at ``endpoint``."""
    bindings = _current
    if bindings is not None and bindings.allows(credential, endpoint):
        return
    bound = bindings.bound_to(credential) if bindings is not None else ()
    error = CredentialNotBound(credential, endpoint, bound)
    log.warning("refused to present a credential: %s", error)
    raise error


def present_secret(ref: SecretRef, host: str, port: int) -> str:
    """The value of ``ref``, if it is bound to host:port (raises SecretError otherwise)."""
    return present_secret_at(ref, host_endpoint(host, port))


def present_secret_at(ref: SecretRef, endpoint: str) -> str:
    """The value of ``ref``, if it is bound to ``endpoint`` (raises SecretError otherwise)."""
    require(secret_credential(ref.secret_ref), endpoint)
    return resolve(ref)


def client_of(auth: OAuth2Auth) -> str:
    return oauth_credential(str(auth.provider), auth.tenant, auth.client_id)


def require_client(auth: OAuth2Auth, host: str, port: int) -> None:
    """Before an access token of ``auth``'s client is presented at host:port."""
    require(client_of(auth), host_endpoint(host, port))


def require_token_url(auth: OAuth2Auth) -> None:
    """Before the client's secret, refresh token or code goes to its token URL."""
    require(client_of(auth), token_endpoint(str(auth.token_url or "")))


def client_secret_for_token_url(auth: OAuth2Auth) -> str | None:
    """The client secret, if it is bound to the token URL (raises SecretError otherwise)."""
    if auth.client_secret is None:
        return None
    require(secret_credential(auth.client_secret.secret_ref),
            token_endpoint(str(auth.token_url or "")))
    return resolve(auth.client_secret)
