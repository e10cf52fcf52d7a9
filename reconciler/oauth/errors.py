"""What an OAuth error response means for the person who has to fix it.

One table for every caller: the token providers, `reconcile auth login`, and
the Graph/EWS transports and test-connection (which see the same Microsoft
identity platform errors). :func:`classify` turns an RFC 6749 error body
(``error``, ``error_description``, and Microsoft's ``error_codes`` /
``correlation_id``) into a :class:`OAuthProblem`: one sentence saying what is
wrong, one saying how to fix it, and whether retrying can ever help.

Nothing here echoes a request: error bodies from identity providers carry no
token, but the description is cut to its first sentence anyway (Entra appends
trace ids and timestamps that only make the message harder to read; the
correlation id is kept because Microsoft support asks for it).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

# Entra error codes (AADSTS<n>) whose cure is a new sign-in by a person.
REAUTHORIZE_CODES = frozenset({
    50173,  # grant revoked: password changed or sessions revoked by an admin
    70008,  # refresh token expired or revoked
    700082,  # refresh token expired after 90 days of inactivity
    70043,  # refresh token expired by a conditional-access sign-in frequency
    50076, 50079,  # multi-factor authentication now required
    50078,  # the MFA claim expired
    54005,  # the authorization code was already redeemed
    70000,  # the grant is invalid or malformed
})
_AADSTS = re.compile(r"AADSTS(\d+)")


@dataclass(frozen=True, slots=True)
class OAuthProblem:
    """An OAuth failure as a person reads it."""

    message: str  # what is wrong
    fix: str  # what to do about it
    permanent: bool  # True: retrying without a change by a person cannot help
    error: str = ""  # the RFC 6749 error code, e.g. invalid_grant
    code: int | None = None  # the first AADSTS number, when Microsoft sent one
    correlation_id: str | None = None

    def __str__(self) -> str:
        ref = f" (correlation id {self.correlation_id})" if self.correlation_id else ""
        return f"{self.message}{ref}. {self.fix}"


def login_hint(server: str | None) -> str:
    """The command that repairs a delegated grant, for ``server`` = NAMESPACE/NAME."""
    return f"re-authorize with `reconcile auth login {server or 'NAMESPACE/SERVER'}`"


def aadsts_codes(body: Mapping[str, Any]) -> list[int]:
    """Microsoft's numeric error codes: ``error_codes``, else the AADSTS numbers in the text."""
    codes = body.get("error_codes")
    if isinstance(codes, list) and codes:
        return [int(c) for c in codes if isinstance(c, int | str) and str(c).isdigit()]
    return [int(c) for c in _AADSTS.findall(str(body.get("error_description") or ""))]


def _first_sentence(text: str) -> str:
    text = " ".join(str(text).split())
    text = re.split(r"\s+Trace ID:|\s+Correlation ID:|\s+Timestamp:", text)[0]
    return text[:300].rstrip(". ")


@dataclass(frozen=True, slots=True)
class _Seen:
    """What one error response said, as the rules below test it."""

    error: str
    code: int | None
    said: str  # the first sentence of error_description, lower-cased
    status: int


@dataclass(frozen=True, slots=True)
class _Rule:
    """A kind of OAuth failure: it matches on an AADSTS code, an RFC 6749 error, or
    ``also``; ``message``/``fix`` may use {said}, {again} and {what}."""

    message: str
    fix: str
    codes: frozenset[int] = frozenset()
    errors: frozenset[str] = frozenset()
    also: Callable[[_Seen], bool] | None = None
    permanent: bool = True

    def matches(self, seen: _Seen) -> bool:
        return (seen.code in self.codes or seen.error in self.errors
                or (self.also is not None and self.also(seen)))


def _client_said(*words: str, without: str = "") -> Callable[[_Seen], bool]:
    """invalid_client whose description mentions ``words`` (and not ``without``)."""
    return lambda s: (s.error == "invalid_client" and all(w in s.said for w in words)
                      and not (without and without in s.said))


# First match wins: the specific Entra codes come before the generic RFC 6749 errors.
_RULES: tuple[_Rule, ...] = (
    _Rule("the app has no consent for the requested permissions{said}",
          "An administrator must grant consent: in Microsoft Entra admin center open App "
          "registrations > the app > API permissions and choose 'Grant admin consent', "
          "then {again}.",
          codes=frozenset({65001}), errors=frozenset({"consent_required"})),
    _Rule("the identity provider rejected the client secret{said}",
          "Put the secret's Value (not its Secret ID) where clientSecret's secretRef points, "
          "and check clientId belongs to the same app registration.",
          codes=frozenset({7000215, 7000216}), also=_client_said("secret", without="expired")),
    _Rule("the app's client secret has expired{said}",
          "Create a new client secret (Entra: App registrations > Certificates & secrets; "
          "Google: Credentials), store it where clientSecret's secretRef points, and apply.",
          codes=frozenset({7000222}), also=_client_said("expired")),
    _Rule("the app or tenant is not known to the identity provider{said}",
          "Check clientId and tenant against the app registration (and the national cloud "
          "of the server).",
          codes=frozenset({700016, 90002, 900023, 90033}),
          errors=frozenset({"unauthorized_client"})),
    _Rule("the redirect URL is not registered for the app{said}",
          "Add redirectUrl exactly as configured (scheme, host, port and path) to the app "
          "registration's redirect URIs, or set redirectUrl to one that is registered.",
          codes=frozenset({50011}), errors=frozenset({"redirect_uri_mismatch"}),
          also=lambda s: "redirect_uri" in s.said),
    _Rule("the authorization grant is expired or revoked{said}",
          "A person must sign in again: {again}.",
          codes=REAUTHORIZE_CODES, errors=frozenset({"invalid_grant"})),
    _Rule("the identity provider rejected the client credentials{said}",
          "Check clientId and the client secret the secretRef points to.",
          errors=frozenset({"invalid_client"})),
    _Rule("the requested scope is not valid for this app{said}",
          "Check scope (app-only tokens need RESOURCE/.default) and that the API "
          "permissions are added to the app registration.",
          codes=frozenset({70011, 500011}), errors=frozenset({"invalid_scope"})),
    _Rule("the sign-in was cancelled or denied{said}",
          "Sign in again and accept the permissions: {again}.",
          errors=frozenset({"access_denied"})),
    _Rule("the identity provider refused the request ({what}){said}",
          "Check provider, tokenUrl and grant in the server's auth block.",
          errors=frozenset({"unsupported_grant_type", "invalid_request",
                            "unsupported_response_type"})),
    _Rule("a conditional-access policy blocked the sign-in{said}",
          "Ask the Entra administrator to allow this client (location, device or app).",
          codes=frozenset({53003})),
    _Rule("the identity provider is unavailable ({what}){said}",
          "Nothing to change: the request is retried later.",
          errors=frozenset({"temporarily_unavailable", "server_error"}),
          also=lambda s: s.status >= 500 or s.status == 429, permanent=False),
)


def classify(body: Mapping[str, Any] | None, *, status: int | None = None,
             server: str | None = None) -> OAuthProblem:
    """Map an OAuth error response to what it means and how to fix it.

    ``body`` is the parsed JSON error (or the query parameters of an error
    redirect); ``status`` the HTTP status when there was no usable body;
    ``server`` the NAMESPACE/NAME the token was for, used in the hints.
    """
    body = body or {}
    error = str(body.get("error") or "")
    codes = aadsts_codes(body)
    code = codes[0] if codes else None
    said = _first_sentence(str(body.get("error_description") or ""))
    corr = body.get("correlation_id")
    seen = _Seen(error, code, said.lower(), status or 0)
    words = {"said": f": {said}" if said else "", "again": login_hint(server),
             "what": error or status}
    rule = next((r for r in _RULES if r.matches(seen)), None)
    if rule is None:  # nothing known: say what came back; only an error code is final
        words["what"] = error or (f"HTTP {status}" if status else "an unknown error")
        rule = _Rule("the identity provider answered {what}{said}",
                     "Check the server's OAuth settings (clientId, tenant, tokenUrl, scope).",
                     permanent=bool(error))
    return OAuthProblem(rule.message.format(**words), rule.fix.format(**words),
                        rule.permanent, error, code, str(corr) if corr else None)
