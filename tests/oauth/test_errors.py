"""Identity-provider error bodies -> what is wrong, how to fix it, and whether a retry
can help; bodies as the local identity provider (Entra / Google shapes) sends them."""

from __future__ import annotations

import httpx
import pytest
from peers.oauth_server import OAuthPeer

from reconciler.oauth.errors import classify

from .kit import CLIENT, SECRET


def token_error(idp: OAuthPeer, url: str, **form: str) -> httpx.Response:
    import ssl

    context = ssl.create_default_context(cafile=str(idp.certs.ca_file))
    return httpx.post(url, data=form, verify=context)


@pytest.mark.parametrize(("setup", "form", "words", "fix"), [
    ("revoked", {"grant_type": "refresh_token", "refresh_token": "rt-gone"},
     "expired or revoked", "reconcile auth login desk/o365"),
    ("wrong-secret", {"grant_type": "client_credentials", "client_secret": "nope"},
     "rejected the client secret", "Value (not its Secret ID)"),
    ("expired-secret", {"grant_type": "client_credentials"},
     "client secret has expired", "Create a new client secret"),
    ("no-consent", {"grant_type": "client_credentials"},
     "no consent", "Grant admin consent"),
])
def test_microsoft_errors_from_the_wire(idp: OAuthPeer, setup: str, form: dict[str, str],
                                        words: str, fix: str) -> None:
    client = idp.register(CLIENT, SECRET)
    client.secret_expired = setup == "expired-secret"
    client.consented = setup != "no-consent"
    reply = token_error(idp, idp.token_url(), client_id=CLIENT,
                        **{"client_secret": SECRET, "scope": "x/.default", **form})
    assert reply.status_code in (400, 401)
    problem = classify(reply.json(), status=reply.status_code, server="desk/o365")
    assert problem.permanent
    assert words in problem.message and fix in problem.fix
    assert problem.correlation_id == reply.json()["correlation_id"]
    assert problem.code == reply.json()["error_codes"][0]
    assert "Trace ID" not in str(problem)  # the noise after the first sentence is cut


def test_google_revoked_refresh_token(idp: OAuthPeer) -> None:
    idp.register(CLIENT, SECRET)
    reply = token_error(idp, idp.generic_token_url, client_id=CLIENT, client_secret=SECRET,
                        grant_type="refresh_token", refresh_token="rt-gone")
    problem = classify(reply.json(), status=reply.status_code, server="desk/gmail")
    assert problem.permanent and "reconcile auth login desk/gmail" in problem.fix
    assert "Token has been expired or revoked" in problem.message


def test_redirect_mismatch_page_and_its_classification(idp: OAuthPeer) -> None:
    import ssl

    idp.register(CLIENT, SECRET, redirect_uris=("http://localhost:8765/oauth/callback",))
    page = httpx.get(idp.authorize_url(), params={
        "client_id": CLIENT, "response_type": "code", "state": "s",
        "redirect_uri": "http://localhost:9999/cb"},
        verify=ssl.create_default_context(cafile=str(idp.certs.ca_file)))
    assert page.status_code == 400 and "AADSTS50011" in page.text
    problem = classify({"error": "invalid_request", "error_description": page.text})
    assert "redirect URL is not registered" in problem.message
    assert "redirectUrl" in problem.fix and problem.permanent


@pytest.mark.parametrize(("body", "status", "permanent", "words"), [
    ({"error": "temporarily_unavailable"}, 503, False, "unavailable"),
    (None, 502, False, "unavailable"),
    (None, 429, False, "unavailable"),
    ({"error": "invalid_scope", "error_description": "AADSTS70011: bad scope"}, 400, True,
     "scope is not valid"),
    ({"error": "invalid_grant", "error_codes": [50076]}, 400, True, "expired or revoked"),
    ({"error": "access_denied"}, None, True, "cancelled or denied"),
    ({"error": "interaction_required", "error_codes": [53003]}, 400, True, "conditional-access"),
    ({"error": "unauthorized_client", "error_codes": [700016]}, 400, True, "not known"),
])
def test_other_answers(body: dict[str, object] | None, status: int | None, permanent: bool,
                       words: str) -> None:
    problem = classify(body, status=status)
    assert problem.permanent is permanent
    assert words in problem.message
    assert problem.fix  # every answer says what to do
