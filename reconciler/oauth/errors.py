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
from collections.abc import Mapping
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
    corr = str(corr) if corr else None
    said_part = f": {said}" if said else ""

    def problem(message: str, fix: str, permanent: bool) -> OAuthProblem:
        return OAuthProblem(message, fix, permanent, error, code, corr)

    again = login_hint(server)
    if code == 65001 or error == "consent_required":
        return problem(
            f"the app has no consent for the requested permissions{said_part}",
            "An administrator must grant consent: in Microsoft Entra admin center open App "
            "registrations > the app > API permissions and choose 'Grant admin consent', "
            f"then {again}.", True)
    if code in (7000215, 7000216) or (error == "invalid_client" and "secret" in said.lower()
                                     and "expired" not in said.lower()):
        return problem(
            f"the identity provider rejected the client secret{said_part}",
            "Put the secret's Value (not its Secret ID) where clientSecret's secretRef points, "
            "and check clientId belongs to the same app registration.", True)
    if code == 7000222 or (error == "invalid_client" and "expired" in said.lower()):
        return problem(
            f"the app's client secret has expired{said_part}",
            "Create a new client secret (Entra: App registrations > Certificates & secrets; "
            "Google: Credentials), store it where clientSecret's secretRef points, and apply.",
            True)
    if code in (700016, 90002, 900023, 90033) or error == "unauthorized_client":
        return problem(
            f"the app or tenant is not known to the identity provider{said_part}",
            "Check clientId and tenant against the app registration (and the national cloud "
            "of the server).", True)
    if code == 50011 or "redirect_uri" in said.lower() or error == "redirect_uri_mismatch":
        return problem(
            f"the redirect URL is not registered for the app{said_part}",
            "Add redirectUrl exactly as configured (scheme, host, port and path) to the app "
            "registration's redirect URIs, or set redirectUrl to one that is registered.", True)
    if code in REAUTHORIZE_CODES or error == "invalid_grant":
        return problem(
            f"the authorization grant is expired or revoked{said_part}",
            f"A person must sign in again: {again}.", True)
    if error == "invalid_client":
        return problem(
            f"the identity provider rejected the client credentials{said_part}",
            "Check clientId and the client secret the secretRef points to.", True)
    if error == "invalid_scope" or code in (70011, 500011):
        return problem(
            f"the requested scope is not valid for this app{said_part}",
            "Check scope (app-only tokens need RESOURCE/.default) and that the API "
            "permissions are added to the app registration.", True)
    if error == "access_denied":
        return problem(
            f"the sign-in was cancelled or denied{said_part}",
            f"Sign in again and accept the permissions: {again}.", True)
    if error in ("unsupported_grant_type", "invalid_request", "unsupported_response_type"):
        return problem(
            f"the identity provider refused the request ({error}){said_part}",
            "Check provider, tokenUrl and grant in the server's auth block.", True)
    if code == 53003:
        return problem(
            f"a conditional-access policy blocked the sign-in{said_part}",
            "Ask the Entra administrator to allow this client (location, device or app).",
            True)
    if error in ("temporarily_unavailable", "server_error") or (status or 0) >= 500 \
            or status == 429:
        return problem(
            f"the identity provider is unavailable ({error or status}){said_part}",
            "Nothing to change: the request is retried later.", False)
    shown = error or (f"HTTP {status}" if status else "an unknown error")
    return problem(f"the identity provider answered {shown}{said_part}",
                   "Check the server's OAuth settings (clientId, tenant, tokenUrl, scope).",
                   bool(error))
