"""Who is asking, and what they may do (SPEC S3): roles and namespace scopes.

One :class:`Principal` per request, whether it came with an API bearer token or a
console session (token login or OpenID Connect). Every API route and console
screen asks the principal two things: does it hold the role the action needs
(:meth:`Principal.require`), and which namespaces may it see
(:meth:`Principal.sees` / :attr:`Principal.namespaces`). Keeping both questions
here, below the daemon and the console, means the HTTP API and the screens
cannot disagree about what a token may do.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Role(StrEnum):
    """What a principal may do. ``sender`` only submits notifications; ``viewer``
    and ``auditor`` read (the auditor is the seeds' named reader of history and
    audit; both read the same things); ``operator`` also acts on the queue and
    runs test connections; ``admin`` may do everything."""

    SENDER = "sender"
    VIEWER = "viewer"
    AUDITOR = "auditor"
    OPERATOR = "operator"
    ADMIN = "admin"


# What each role grants, as the set of roles it stands in for: a route that needs
# "viewer" lets an auditor, operator or admin in too, but never a sender.
_GRANTS: dict[Role, frozenset[Role]] = {
    Role.SENDER: frozenset({Role.SENDER}),
    Role.VIEWER: frozenset({Role.VIEWER, Role.AUDITOR}),
    Role.AUDITOR: frozenset({Role.VIEWER, Role.AUDITOR}),
    Role.OPERATOR: frozenset({Role.VIEWER, Role.AUDITOR, Role.OPERATOR}),
    Role.ADMIN: frozenset(Role),
}


class Forbidden(Exception):
    """The principal lacks ``needed``; the API answers 403 and the console renders
    a page naming the role."""

    def __init__(self, needed: Role, principal: Principal) -> None:
        self.needed = needed
        self.principal = principal
        super().__init__(f"this needs the {needed.value} role; {principal.name} has "
                         f"{', '.join(sorted(r.value for r in principal.roles)) or 'none'}")


@dataclass(frozen=True)
class Principal:
    """An authenticated caller.

    ``name`` is printable and secret-free (a token's reference, an OIDC subject's
    e-mail): it goes into the audit of operator actions. ``namespaces`` None means
    every namespace; a set limits the principal to those (an MSP's customer).
    """

    name: str
    roles: frozenset[Role]
    namespaces: frozenset[str] | None = None
    # Every role these roles stand in for, worked out once: asking is then one set
    # look-up, on the intake path's every request.
    _granted: frozenset[Role] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_granted", frozenset().union(*(_GRANTS[r] for r in self.roles)))

    @classmethod
    def of(cls, name: str, roles: Iterable[Role | str],
           namespaces: Iterable[str] | None = None) -> Principal:
        return cls(name, frozenset(Role(r) for r in roles),
                   None if namespaces is None else frozenset(namespaces))

    def has(self, needed: Role) -> bool:
        return needed in self._granted

    def require(self, needed: Role) -> None:
        if not self.has(needed):
            raise Forbidden(needed, self)

    def sees(self, namespace: str) -> bool:
        return self.namespaces is None or namespace in self.namespaces

    def visible(self, namespaces: Iterable[str]) -> list[str]:
        """Those of ``namespaces`` this principal may see, in their order."""
        return [ns for ns in namespaces if self.sees(ns)]


# The principal of a bearer token given with no role: every right, every namespace,
# as all tokens had before roles existed.
def full_access(name: str) -> Principal:
    return Principal(name, frozenset({Role.ADMIN}), None)


@dataclass(frozen=True)
class TokenSpec:
    """One API bearer token as the settings give it: its secret reference, the roles
    it holds and the namespaces it is limited to (None: all). ``name`` is printable
    and goes into the audit; None uses the reference, redacted."""

    secret_ref: str
    roles: tuple[Role, ...] = (Role.ADMIN,)
    namespaces: tuple[str, ...] | None = None
    name: str | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TokenSpec:
        """Back from ``dataclasses.asdict`` through JSON (a supervised child's settings)."""
        namespaces = data.get("namespaces")
        return cls(str(data["secret_ref"]), tuple(Role(r) for r in data.get("roles") or ()),
                   None if namespaces is None else tuple(namespaces), data.get("name"))
